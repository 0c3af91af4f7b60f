//! WorkOS `POST /user_management/authenticate` (refresh-token grant), as Factory's CLI uses it
//! (`upstream-factory.md` §1.5): a form-encoded body with `grant_type=refresh_token`,
//! `refresh_token` and the fixed `client_id`. Refresh tokens are single-use and rotate.

use serde_json::{Value, json};

use crate::WORKOS_CLIENT_ID;
use crate::state::{RecordedRequest, Shared};

/// A WorkOS-style error body.
pub fn error_body(error: &str, description: &str) -> Value {
    json!({"error": error, "error_description": description})
}

/// Validates the form; returns the refresh token to redeem, or a 400 `invalid_request` message.
pub(crate) fn parse_refresh_form(req: &RecordedRequest) -> Result<String, String> {
    let ct = req.header("content-type").unwrap_or_default();
    let is_form = ct.split(';').next().is_some_and(|m| {
        m.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    if !is_form {
        return Err(format!(
            "mock: content-type must be application/x-www-form-urlencoded (got `{ct}`)"
        ));
    }
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&req.body)
        .map_err(|e| format!("mock: body is not valid form encoding: {e}"))?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match field("grant_type") {
        Some("refresh_token") => {}
        other => {
            return Err(format!(
                "mock: grant_type must be `refresh_token` (got {other:?})"
            ));
        }
    }
    match field("client_id") {
        Some(WORKOS_CLIENT_ID) => {}
        other => {
            return Err(format!(
                "mock: client_id must be `{WORKOS_CLIENT_ID}` (got {other:?})"
            ));
        }
    }
    match field("refresh_token") {
        Some(t) if !t.trim().is_empty() => Ok(t.to_owned()),
        _ => Err("mock: refresh_token is required".into()),
    }
}

/// Redeems a refresh token: on success it is spent, a new one replaces it and a fresh access
/// token is registered as minted. Returns `(status, body)`.
pub(crate) fn redeem(shared: &Shared, refresh_token: &str) -> (u16, Value) {
    let access = format!("at-{}", uuid::Uuid::new_v4());
    let next = format!("rt-{}", uuid::Uuid::new_v4());
    {
        let mut st = shared.lock();
        if !st.refresh_tokens.remove(refresh_token) {
            drop(st);
            return (
                400,
                error_body("invalid_grant", "Refresh token already used or invalid"),
            );
        }
        st.refresh_tokens.insert(next.clone());
        st.minted_access_tokens.insert(access.clone());
    }
    (
        200,
        json!({
            "access_token": access,
            "refresh_token": next,
            "user": {
                "id": "user_mock",
                "email": "mock@example.com",
                "first_name": "Mock",
                "last_name": "User",
            },
            "organization_id": "org_mock",
        }),
    )
}
