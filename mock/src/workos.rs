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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockOptions;
    use axum::http::{HeaderMap, HeaderValue};

    fn form_request(body: &str, content_type: &'static str) -> RecordedRequest {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static(content_type));
        RecordedRequest::new(
            "POST",
            "/user_management/authenticate",
            None,
            &headers,
            body.to_owned().into(),
        )
    }

    #[test]
    fn form_checks() {
        let ok =
            format!("grant_type=refresh_token&refresh_token=rt-1&client_id={WORKOS_CLIENT_ID}");
        let form = "application/x-www-form-urlencoded";
        assert_eq!(
            parse_refresh_form(&form_request(&ok, form)),
            Ok("rt-1".into())
        );
        assert!(parse_refresh_form(&form_request(&ok, "application/json")).is_err());
        let wrong_client = "grant_type=refresh_token&refresh_token=rt-1&client_id=client_factory";
        assert!(parse_refresh_form(&form_request(wrong_client, form)).is_err());
        let wrong_grant =
            format!("grant_type=password&refresh_token=rt-1&client_id={WORKOS_CLIENT_ID}");
        assert!(parse_refresh_form(&form_request(&wrong_grant, form)).is_err());
        let no_token = format!("grant_type=refresh_token&client_id={WORKOS_CLIENT_ID}");
        assert!(parse_refresh_form(&form_request(&no_token, form)).is_err());
    }

    #[test]
    fn refresh_tokens_are_single_use_and_rotate() {
        let shared = Shared::new(MockOptions::default());
        shared.lock().refresh_tokens.insert("rt-seed".into());
        let (status, body) = redeem(&shared, "rt-seed");
        assert_eq!(status, 200);
        let next = body["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let access = body["access_token"].as_str().unwrap_or_default().to_owned();
        assert!(next.starts_with("rt-") && access.starts_with("at-"));
        {
            let st = shared.lock();
            assert!(!st.refresh_tokens.contains("rt-seed"));
            assert!(st.refresh_tokens.contains(&next));
            assert!(st.minted_access_tokens.contains(&access));
        }
        let (status, body) = redeem(&shared, "rt-seed");
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(redeem(&shared, &next).0, 200);
        assert_eq!(redeem(&shared, &next).0, 400);
    }
}
