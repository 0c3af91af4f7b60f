//! Shared test harness: a real gateway on a loopback port, pointed at the in-repo mock upstream.
#![allow(dead_code)]

pub mod cluster;
pub mod store;
pub mod streams;

use std::path::{Path, PathBuf};
use std::time::Duration;

use droid2api::config::{Env, Settings};
use droid2api::server::Running;
#[allow(unused_imports)]
pub use droid2api_mock::{MockUpstream, Reply, Rule};
use serde_json::Value;

/// A gateway under test.
pub struct Gateway {
    pub running: Option<Running>,
    pub addr: std::net::SocketAddr,
    pub data_dir: PathBuf,
    pub home_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// Builds a gateway: loopback, port 0, Factory and WorkOS at the mock, temporary data and home
/// folders (so the machine's own `~/.factory/auth.json` is never read).
pub struct Builder {
    env: Vec<(String, String)>,
    config: Option<Value>,
    data_dir: Option<PathBuf>,
    home_dir: Option<PathBuf>,
}

pub fn gateway(mock: &MockUpstream) -> Builder {
    Builder {
        env: vec![
            ("HOST".into(), "127.0.0.1".into()),
            ("PORT".into(), "0".into()),
            ("FACTORY_BASE_URL".into(), mock.url()),
            ("WORKOS_BASE_URL".into(), mock.url()),
            ("LOG_LEVEL".into(), "warn".into()),
        ],
        config: None,
        data_dir: None,
        home_dir: None,
    }
}

impl Builder {
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn config(mut self, v: Value) -> Self {
        self.config = Some(v);
        self
    }

    /// Reuses a data folder (restarts).
    pub fn data_dir(mut self, p: &Path) -> Self {
        self.data_dir = Some(p.to_path_buf());
        self
    }

    pub fn home_dir(mut self, p: &Path) -> Self {
        self.home_dir = Some(p.to_path_buf());
        self
    }

    pub fn settings(&self) -> (Settings, Option<tempfile::TempDir>, PathBuf, PathBuf) {
        let temp = tempfile::tempdir().unwrap();
        let data = self
            .data_dir
            .clone()
            .unwrap_or_else(|| temp.path().join("data"));
        let home = self
            .home_dir
            .clone()
            .unwrap_or_else(|| temp.path().join("home"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        if let Some(c) = &self.config {
            std::fs::write(
                data.join("config.json"),
                serde_json::to_vec_pretty(c).unwrap(),
            )
            .unwrap();
        }
        let mut env = Env::from_pairs(self.env.iter().cloned());
        env.set("DATA_DIR", data.display().to_string());
        env.set("HOME", home.display().to_string());
        env.set("LOG_DIR", temp.path().join("logs").display().to_string());
        let settings = Settings::load(&env).expect("valid test settings");
        (settings, Some(temp), data, home)
    }

    pub async fn start(self) -> Gateway {
        let (settings, temp, data, home) = self.settings();
        let running = Running::start(settings).await.expect("gateway starts");
        Gateway {
            addr: running.addr,
            running: Some(running),
            data_dir: data,
            home_dir: home,
            _temp: temp,
        }
    }
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the gateway (graceful) and returns its folders for a restart.
    pub async fn stop(mut self) -> (PathBuf, PathBuf, Option<tempfile::TempDir>) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        (
            self.data_dir.clone(),
            self.home_dir.clone(),
            self._temp.take(),
        )
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap()
}

/// POSTs JSON and returns (status, headers, body bytes).
pub async fn post(
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, bytes::Bytes) {
    let mut req = client().post(url).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    (status, h, resp.bytes().await.unwrap())
}

/// POSTs raw bytes.
pub async fn post_raw(
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, bytes::Bytes) {
    let mut req = client()
        .post(url)
        .body(body)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    (status, h, resp.bytes().await.unwrap())
}

pub fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

/// The bearer credential of the last LLM call the mock saw.
pub fn last_bearer(mock: &MockUpstream) -> String {
    let r = mock.last_llm_request().expect("an upstream call");
    r.headers
        .get("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string()
}

pub fn anthropic_body(model: &str) -> Value {
    serde_json::json!({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]})
}

pub fn responses_body(model: &str) -> Value {
    serde_json::json!({"model": model, "input": "Hello"})
}

pub fn chat_body(model: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Hello"}]})
}

/// Config with one model of each type at a given reasoning level.
pub fn models_config(level: &str) -> Value {
    serde_json::json!({"models": [
        {"id": "claude-test", "type": "anthropic", "reasoning": level},
        {"id": "gpt-test", "type": "openai", "reasoning": level},
        {"id": "glm-test", "type": "common", "reasoning": level, "provider": "fireworks"}
    ]})
}
