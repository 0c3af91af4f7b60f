//! The console's two session endpoints (contract §11): `POST /admin/session` (login with the
//! admin key in the body) and `DELETE /admin/session` (logout). The session state itself lives
//! in [`crate::inbound::session`], where the admin gate checks it.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AdminError, AdminState, Reply, json_object, now_ms, req_string, time, unthrottled};
use crate::inbound::rejected;
use crate::inbound::session;

fn with_cookie(mut resp: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `POST /admin/session` `{key}` → `{csrf_token, expires_at}` and the session cookie. Throttled
/// like the admin key itself: a wrong key counts against the address (10 within 60 s → 429).
pub(super) async fn login(State(st): State<AdminState>, req: Request) -> Reply {
    let app = &st.app;
    let (parts, body) = req.into_parts();
    let key = unthrottled(app, &parts.headers, &parts.extensions)?;
    let o = json_object(body).await?;
    let given = req_string(&o, "key")?;
    let inbound = &app.inbound;
    if !key.ct_eq(given.trim()) {
        let ip = inbound.client_ip_of(&parts.extensions, &parts.headers);
        inbound.rejected.record(rejected::BAD_ADMIN_KEY);
        let blocked = inbound.admin_failures.fail(ip, std::time::Instant::now());
        tracing::warn!(client = %ip, throttled_for_s = blocked, "console login with a wrong admin key");
        return Err(AdminError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong admin key",
        ));
    }
    let opened = inbound.sessions.open(key, now_ms()).map_err(|e| {
        AdminError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_unavailable",
            e.to_string(),
        )
    })?;
    let secure = inbound.came_over_https(&parts.headers);
    tracing::info!(
        client = %inbound.client_ip_of(&parts.extensions, &parts.headers),
        "console login"
    );
    let resp = axum::Json(json!({
        "success": true,
        "data": {"csrf_token": opened.csrf, "expires_at": time(opened.expires_at)},
    }))
    .into_response();
    Ok(with_cookie(
        resp,
        &session::set_cookie(&opened.token, secure),
    ))
}

/// `DELETE /admin/session`: ends the session of the cookie sent (if any) and clears the cookie.
/// Authenticated like any admin call (with the cookie, it needs the CSRF token).
pub(super) async fn logout(State(st): State<AdminState>, req: Request) -> Reply {
    let inbound = &st.app.inbound;
    let ended = session::cookie_value(req.headers()).is_some_and(|t| inbound.sessions.end(t));
    let secure = inbound.came_over_https(req.headers());
    let resp = axum::Json(json!({"success": true, "data": {"ended": ended}})).into_response();
    Ok(with_cookie(resp, &session::clear_cookie(secure)))
}
