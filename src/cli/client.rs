//! The HTTP side of `health` and `keys`: where the gateway is, the admin key, and calls to the
//! admin API with its envelope unwrapped.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::Value;

use super::{EXIT_FAILURE, EXIT_USAGE};
use crate::config::{Env, Settings};
use crate::secret::Secret;

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// Bad arguments, configuration or input (exit 2).
    Usage(String),
    /// The gateway could not be reached or did not answer as a gateway (exit 1).
    Unreachable(String),
    /// The admin API answered an error: its message, status and code (exit 1).
    Api(String),
}

impl CliError {
    pub fn code(&self) -> i32 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Unreachable(_) | CliError::Api(_) => EXIT_FAILURE,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            CliError::Usage(m) | CliError::Unreachable(m) | CliError::Api(m) => m,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// The local gateway's base URL from its own settings (`PORT`, `HOST`, `.env`,
/// `data/config.json`); an invalid configuration is a usage error.
pub fn local_base_url(env: &Env) -> Result<String, CliError> {
    let settings = Settings::load(env).map_err(|e| CliError::Usage(e.to_string()))?;
    base_url_of(&settings.host, settings.port)
}

/// `http://host:port` for a listen address: an unspecified host (`0.0.0.0`, `::`) means "every
/// address", which this machine reaches on its loopback.
pub fn base_url_of(host: &str, port: u16) -> Result<String, CliError> {
    if port == 0 {
        return Err(CliError::Usage(
            "PORT is 0 (any free port), so the gateway's address is not known: pass --url".into(),
        ));
    }
    let bare = host.trim().trim_matches(|c| c == '[' || c == ']');
    let connect = match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) if ip.is_unspecified() => "127.0.0.1".to_string(),
        Ok(std::net::IpAddr::V6(ip)) if ip.is_unspecified() => "::1".to_string(),
        _ if bare.is_empty() => "127.0.0.1".to_string(),
        _ => bare.to_string(),
    };
    Ok(if connect.contains(':') {
        format!("http://[{connect}]:{port}")
    } else {
        format!("http://{connect}:{port}")
    })
}

/// A `--url` value: an `http://` or `https://` URL, kept without its trailing slash (a path
/// prefix, for a gateway behind a reverse proxy, is kept).
pub fn parse_base_url(url: &str) -> Result<String, CliError> {
    let trimmed = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed)
        .map_err(|e| CliError::Usage(format!("--url {url:?}: not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(CliError::Usage(format!(
            "--url {url:?}: expected an http:// or https:// URL"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(CliError::Usage(format!(
            "--url {url:?}: give the gateway's base URL, without a query or fragment"
        )));
    }
    Ok(trimmed.to_string())
}

/// The base URL: `--url` when given, else the local gateway's.
pub fn base_url(env: &Env, url: Option<&str>) -> Result<String, CliError> {
    match url {
        Some(u) => parse_base_url(u),
        None => local_base_url(env),
    }
}

/// The admin key: the file named by `--admin-key-file` (its one line), else `ADMIN_ACCESS_KEY`
/// from the environment or `.env`, as the gateway reads it.
pub fn admin_key(env: &Env, file: Option<&Path>) -> Result<Secret, CliError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("--admin-key-file {}: {e}", path.display())))?;
        let key = text.trim();
        if key.is_empty() {
            return Err(CliError::Usage(format!(
                "--admin-key-file {}: the file is empty",
                path.display()
            )));
        }
        if key.contains(['\n', '\r']) {
            return Err(CliError::Usage(format!(
                "--admin-key-file {}: expected the admin key alone on one line",
                path.display()
            )));
        }
        return Ok(Secret::new(key));
    }
    env.get("ADMIN_ACCESS_KEY").map(Secret::new).ok_or_else(|| {
        CliError::Usage(
            "no admin key: set ADMIN_ACCESS_KEY (in the environment or .env) or pass --admin-key-file PATH".into(),
        )
    })
}

/// An HTTP client for the gateway: direct (the proxy variables are the gateway's egress
/// settings, not a way to reach it), bounded by `timeout`.
pub fn http(timeout: Duration) -> Result<reqwest::Client, CliError> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .user_agent(concat!("droid2api-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| CliError::Unreachable(format!("cannot set up the HTTP client: {e}")))
}

/// A transport failure towards `base`, with its innermost cause
/// ("Connection refused (os error 111)").
pub fn unreachable(base: &str, e: &reqwest::Error) -> CliError {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    CliError::Unreachable(format!(
        "cannot reach the gateway at {base}: {what} ({cause}); is it running? (--url sets the address)"
    ))
}

/// Percent-encodes one query value or path segment (everything but RFC 3986's unreserved
/// characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?a=1&b=2` from the parameters that are set ("" when none is).
pub fn query(params: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The admin API of one gateway, with the admin key.
#[derive(Debug)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
    key: Secret,
}

impl Admin {
    pub fn new(base: String, key: Secret, timeout: Duration) -> Result<Admin, CliError> {
        Ok(Admin {
            http: http(timeout)?,
            base,
            key,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, CliError> {
        let mut key = HeaderValue::from_str(self.key.expose()).map_err(|_| {
            CliError::Usage("the admin key holds characters a header cannot carry".into())
        })?;
        key.set_sensitive(true);
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-admin-key", key);
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        req.send().await.map_err(|e| unreachable(&self.base, &e))
    }

    /// Calls a route that answers the admin envelope and returns its `data`; an error envelope
    /// becomes [`CliError::Api`] with its message, status and code.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| unreachable(&self.base, &e))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| self.not_admin(status))?;
        if v.get("success") == Some(&Value::Bool(true)) {
            return Ok(v.get("data").cloned().unwrap_or(Value::Null));
        }
        Err(api_error(status, &v).unwrap_or_else(|| self.not_admin(status)))
    }

    /// Calls a route that answers a file (export): its text when 200.
    pub async fn file(&self, path: &str) -> Result<String, CliError> {
        let resp = self.send(Method::GET, path, None).await?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| unreachable(&self.base, &e))?;
        if status == 200 {
            return String::from_utf8(bytes.to_vec())
                .map_err(|_| CliError::Api("the export is not UTF-8 text".into()));
        }
        let err = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| api_error(status, &v));
        Err(err.unwrap_or_else(|| self.not_admin(status)))
    }

    fn not_admin(&self, status: u16) -> CliError {
        CliError::Unreachable(format!(
            "{} answered {status} without the admin API's envelope: is it a droid2api gateway? (--url sets the address)",
            self.base
        ))
    }
}

/// `{"success":false,"error":{"code","message"}}` as "message (status code)".
fn api_error(status: u16, v: &Value) -> Option<CliError> {
    if v.get("success") != Some(&Value::Bool(false)) {
        return None;
    }
    let err = v.get("error")?;
    let message = err.get("message")?.as_str()?;
    let code = err.get("code").and_then(Value::as_str).unwrap_or("error");
    Some(CliError::Api(format!("{message} ({status} {code})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_hosts_mean_the_loopback() {
        let url = |h: &str| base_url_of(h, 3000).unwrap_or_default();
        assert_eq!(url("0.0.0.0"), "http://127.0.0.1:3000");
        assert_eq!(url("::"), "http://[::1]:3000");
        assert_eq!(url("[::]"), "http://[::1]:3000");
        assert_eq!(url("127.0.0.1"), "http://127.0.0.1:3000");
        assert_eq!(url("::1"), "http://[::1]:3000");
        assert_eq!(url("gateway.local"), "http://gateway.local:3000");
        assert!(matches!(base_url_of("0.0.0.0", 0), Err(CliError::Usage(_))));
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            parse_base_url("http://10.0.0.5:3000/").ok().as_deref(),
            Some("http://10.0.0.5:3000")
        );
        assert_eq!(
            parse_base_url("https://example.com/droid2api/")
                .ok()
                .as_deref(),
            Some("https://example.com/droid2api")
        );
        for bad in ["10.0.0.5:3000", "ftp://x", "http://x/?a=1", "nope"] {
            assert!(
                matches!(parse_base_url(bad), Err(CliError::Usage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[
                ("q", Some("a b&c/你".into())),
                ("x", None),
                ("p", Some("2".into()))
            ]),
            "?q=a%20b%26c%2F%E4%BD%A0&p=2"
        );
    }

    #[test]
    fn the_admin_key_comes_from_the_file_or_the_environment() {
        let env = Env::from_pairs([("ADMIN_ACCESS_KEY", "from-the-environment-123")]);
        assert_eq!(
            admin_key(&env, None).map(|k| k.expose().to_string()),
            Ok("from-the-environment-123".to_string())
        );
        assert!(matches!(
            admin_key(&Env::default(), None),
            Err(CliError::Usage(_))
        ));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("key");
        std::fs::write(&path, "from-the-file-0123456789\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            admin_key(&env, Some(&path)).map(|k| k.expose().to_string()),
            Ok("from-the-file-0123456789".to_string())
        );
        std::fs::write(&path, "  \n").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            admin_key(&env, Some(&path)),
            Err(CliError::Usage(_))
        ));
        std::fs::write(&path, "a\nb\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            admin_key(&env, Some(&path)),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            admin_key(&env, Some(&dir.path().join("missing"))),
            Err(CliError::Usage(_))
        ));
    }
}
