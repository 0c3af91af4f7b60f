//! `GET/PUT /admin/config` and `POST /admin/config/reset`: the stored admin layer of the
//! `key_pool` settings. Precedence: env > stored > config.json > defaults. A change is durable
//! before the reply and effective at once.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{AdminError, AdminState, Reply, json_object, kind_of, ok, reply};
use crate::config::{KEY_POOL_FIELDS, KeyPoolSettings, key_pool_from};
use crate::store::records::StoreOp;

fn key_pool_json(k: &KeyPoolSettings) -> Value {
    json!({
        "algorithm": k.algorithm,
        "max_attempts": k.max_attempts,
        "rate_limit_cooldown_s": k.rate_limit_cooldown_s,
        "rate_limit_cooldown_max_s": k.rate_limit_cooldown_max_s,
        "failure_threshold": k.failure_threshold,
        "failure_window_s": k.failure_window_s,
        "failure_cooldown_s": k.failure_cooldown_s,
        "unauthorized_threshold": k.unauthorized_threshold,
        "auto_fallback": k.auto_fallback,
        "test_concurrency": k.test_concurrency,
        "sticky_sessions": k.sticky_sessions,
        "sticky_ttl_s": k.sticky_ttl_s,
    })
}

fn config_json(st: &AdminState) -> Value {
    json!({
        "key_pool": key_pool_json(&st.app.pool.settings()),
        "pinned": st.app.settings.pinned,
    })
}

fn stored_layer(st: &AdminState) -> BTreeMap<String, Value> {
    st.app
        .stored_key_pool
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Recomputes the effective settings from a stored layer and applies them to the pool.
fn apply(st: &AdminState, stored: BTreeMap<String, Value>) {
    crate::credentials::fleet::apply_stored_settings(
        &st.app.settings,
        &st.app.stored_key_pool,
        &st.app.pool,
        stored,
    );
}

pub(super) async fn get_config(State(st): State<AdminState>) -> Reply {
    ok(config_json(&st))
}

/// What replaces a Node.js droid2api `PUT /admin/config` object here.
fn node_setting(name: &str) -> Option<&'static str> {
    Some(match name {
        "retry" | "autoBan" => {
            "failover, bans and cooldowns are automatic here: use max_attempts, failure_threshold, failure_window_s, failure_cooldown_s, unauthorized_threshold and the rate_limit_cooldown settings"
        }
        "performance" => "its concurrentLimit is test_concurrency here",
        "multiTier" => {
            "pool groups always take effect here; auto_fallback: false is its strictMode"
        }
        _ => return None,
    })
}

pub(super) async fn put_config(State(st): State<AdminState>, body: Body) -> Reply {
    let o = json_object(body).await?;
    if o.is_empty() {
        return Err(AdminError::bad_request(format!(
            "nothing to change: send one or more of {}",
            KEY_POOL_FIELDS.join(", ")
        )));
    }
    if let Some(k) = o.keys().find(|k| !KEY_POOL_FIELDS.contains(&k.as_str())) {
        return Err(AdminError::bad_request(match node_setting(k) {
            Some(instead) => format!("{k}: a setting of the Node.js droid2api; {instead}"),
            None => format!(
                "{k}: unknown key_pool setting (known: {})",
                KEY_POOL_FIELDS.join(", ")
            ),
        }));
    }
    if let Some(k) = o
        .keys()
        .find(|k| st.app.settings.pinned.contains(&k.as_str()))
    {
        return Err(AdminError::conflict(format!(
            "{k}: set by the environment (KEY_POOL_ALGORITHM), which wins over the admin API; unset it to change {k} here"
        )));
    }
    if let Some((k, _)) = o.iter().find(|(_, v)| v.is_null()) {
        return Err(AdminError::bad_request(format!(
            "{k}: expected a value, got {} (POST /admin/config/reset drops every stored setting)",
            kind_of(&Value::Null)
        )));
    }
    let _guard = st.config_lock.lock().await;
    // Validated over the current effective settings, so cross-field rules see the result.
    let (_, findings) = key_pool_from(&o, st.app.pool.settings());
    if !findings.errors.is_empty() {
        return Err(AdminError::bad_request(findings.errors.join("; ")));
    }
    let ops = o
        .iter()
        .map(|(name, value)| StoreOp::PutSetting {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    st.app.pool.persist_ops(ops).await?;
    let mut stored = stored_layer(&st);
    stored.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
    apply(&st, stored);
    tracing::info!(fields = ?o.keys().collect::<Vec<_>>(), "admin: key_pool settings changed");
    reply(StatusCode::OK, config_json(&st), "settings saved")
}

pub(super) async fn reset_config(State(st): State<AdminState>) -> Reply {
    let _guard = st.config_lock.lock().await;
    st.app
        .pool
        .persist_ops(vec![StoreOp::ClearSettings])
        .await?;
    apply(&st, BTreeMap::new());
    tracing::info!("admin: stored key_pool settings dropped");
    reply(
        StatusCode::OK,
        config_json(&st),
        "stored settings dropped: environment, config.json and defaults apply",
    )
}
