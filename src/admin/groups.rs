//! Pool groups (tiers): list with counts, create, update, delete (keys move to `default`).

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{AdminError, AdminState, Reply, json_object, ok, opt_i64, opt_string, path_id, reply};
use crate::credentials::pool::Counts;
use crate::store::records::PoolGroup;

/// Description longer than this is refused.
const DESCRIPTION_MAX_CHARS: usize = 1000;
const NAME_MAX_CHARS: usize = 100;

fn group_json(g: &PoolGroup, c: Option<&Counts>) -> Value {
    let c = c.copied().unwrap_or_default();
    json!({
        "id": g.id,
        "name": g.name,
        "priority": g.priority,
        "description": g.description,
        "total": c.total,
        "active": c.active,
        "disabled": c.disabled,
        "banned": c.banned,
        "cooling": c.cooling,
    })
}

/// One group with its current counts.
fn group_view(st: &AdminState, id: &str) -> Value {
    let (_, per) = st.app.pool.stats();
    match per.iter().find(|(g, _)| g.id == id) {
        Some((g, c)) => group_json(g, Some(c)),
        None => Value::Null,
    }
}

pub(super) async fn list(State(st): State<AdminState>) -> Reply {
    let (_, per) = st.app.pool.stats();
    ok(Value::Array(
        per.iter().map(|(g, c)| group_json(g, Some(c))).collect(),
    ))
}

fn check_text(name: Option<&str>, description: Option<&str>) -> Result<(), AdminError> {
    if let Some(n) = name
        && n.chars().count() > NAME_MAX_CHARS
    {
        return Err(AdminError::bad_request(format!(
            "name: at most {NAME_MAX_CHARS} characters"
        )));
    }
    if let Some(d) = description
        && d.chars().count() > DESCRIPTION_MAX_CHARS
    {
        return Err(AdminError::bad_request(format!(
            "description: at most {DESCRIPTION_MAX_CHARS} characters"
        )));
    }
    Ok(())
}

pub(super) async fn create(State(st): State<AdminState>, body: Body) -> Reply {
    let o = json_object(body).await?;
    let id = opt_string(&o, "id")?.ok_or_else(|| {
        AdminError::bad_request("id: required (1 to 32 characters of a-z, 0-9, _ or -)")
    })?;
    let name = opt_string(&o, "name")?
        .ok_or_else(|| AdminError::bad_request("name: required (a string)"))?;
    let priority = opt_i64(&o, "priority")?.ok_or_else(|| {
        AdminError::bad_request("priority: required (a whole number; lower serves first)")
    })?;
    let description = opt_string(&o, "description")?.unwrap_or_default();
    check_text(Some(&name), Some(&description))?;
    let g = st
        .app
        .pool
        .create_group(id.trim(), &name, priority, &description)
        .await?;
    tracing::info!(group = %g.id, priority = g.priority, "admin: pool group created");
    reply(
        StatusCode::CREATED,
        group_json(&g, Some(&Counts::default())),
        "pool group created",
    )
}

pub(super) async fn update(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Reply {
    let id = path_id(id)?;
    let o = json_object(body).await?;
    if let Some(new_id) = opt_string(&o, "id")?
        && new_id != id
    {
        return Err(AdminError::bad_request(
            "id: a group's id cannot be changed (create a new group and move the keys)",
        ));
    }
    let name = opt_string(&o, "name")?;
    let priority = opt_i64(&o, "priority")?;
    let description = opt_string(&o, "description")?;
    if name.is_none() && priority.is_none() && description.is_none() {
        return Err(AdminError::bad_request(
            "nothing to change: send name, priority and/or description",
        ));
    }
    check_text(name.as_deref(), description.as_deref())?;
    let g = st
        .app
        .pool
        .update_group(&id, name.as_deref(), priority, description.as_deref())
        .await?;
    tracing::info!(group = %g.id, priority = g.priority, "admin: pool group updated");
    reply(StatusCode::OK, group_view(&st, &g.id), "pool group updated")
}

pub(super) async fn remove(
    State(st): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = path_id(id)?;
    let (g, moved) = st.app.pool.delete_group(&id).await?;
    tracing::info!(group = %g.id, moved_keys = moved, "admin: pool group deleted");
    reply(
        StatusCode::OK,
        json!({
            "deleted": {
                "id": g.id,
                "name": g.name,
                "priority": g.priority,
                "description": g.description,
            },
            "moved_keys": moved,
            // The Node version's name for `moved_keys`, for its scripts.
            "affected_keys": moved,
        }),
        &format!("pool group deleted; {moved} keys moved to default"),
    )
}
