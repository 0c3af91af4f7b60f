//! The HTTP/1.1 client (hyper, one keep-alive connection per worker, `TCP_NODELAY`) and the
//! requests of every scenario: what a client sends to the gateway, and the equivalent call a
//! gateway makes to Factory, sent straight to the mock for the direct baseline.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::sse::MARKER;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

pub async fn connect(addr: SocketAddr) -> Result<Conn, ClientError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(ClientError::Connect)?;
    tcp.set_nodelay(true).map_err(ClientError::Connect)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        // Ends when the connection closes; errors show up on the requests.
        let _ = conn.await;
    });
    Ok(Conn { sender })
}

impl Conn {
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, ClientError> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }

    /// Whether the connection can carry another request.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }
}

/// A request to send again and again.
#[derive(Debug, Clone)]
pub struct ReqSpec {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ReqSpec {
    pub fn build(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Where requests go and what a good answer looks like.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub spec: Arc<ReqSpec>,
    /// A good non-streaming answer carries the mock's marker (false for `/v1/models`).
    pub expect_marker: bool,
}

/// Why a request did not count as served.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    Status(u16),
    /// 200 without the content the mock sent.
    BadBody,
    Transport(String),
    Timeout,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(s) => write!(f, "HTTP {s}"),
            Self::BadBody => write!(f, "200 without the mock's content"),
            Self::Transport(e) => write!(f, "{e}"),
            Self::Timeout => write!(f, "timeout"),
        }
    }
}

/// Sends one request and reads the whole answer.
pub async fn fetch(conn: &mut Conn, target: &Target) -> Result<(), Failure> {
    let resp = conn
        .send(target.spec.build())
        .await
        .map_err(|e| Failure::Transport(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::Transport(e.to_string()))?
        .to_bytes();
    if status != 200 {
        return Err(Failure::Status(status));
    }
    if target.expect_marker && memchr::memmem::find(&body, MARKER).is_none() {
        return Err(Failure::BadBody);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

pub const CLAUDE: &str = "claude-sonnet-4-6";
pub const GPT: &str = "gpt-5.4";
const SYSTEM: &str = "You are a careful assistant. Answer briefly and cite the file you read.";
const MAX_TOKENS: u64 = 1024;

/// A realistic conversation: `messages` turns (user first, alternating), each ~`bytes` long.
pub fn conversation(messages: usize, bytes: usize) -> Vec<(&'static str, String)> {
    const WORDS: &str = "the gateway forwards each request to a pooled key and streams the answer back while it counts tokens ";
    (0..messages.max(1))
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            let mut text = format!("turn {i}: ");
            while text.len() < bytes {
                text.push_str(WORDS);
            }
            text.truncate(bytes.max(8));
            (role, text.trim_end().to_owned())
        })
        .collect()
}

/// The wire shape of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Anthropic Messages (client `/v1/messages`, or Factory's `/a/v1/messages`).
    Anthropic,
    /// OpenAI Chat Completions (client `/v1/chat/completions`).
    Chat,
    /// OpenAI Responses (Factory's `/o/v1/responses`).
    Responses,
}

pub fn body(shape: Shape, model: &str, conv: &[(&str, String)], stream: bool) -> Bytes {
    let turns: Vec<Value> = conv
        .iter()
        .map(|(role, text)| json!({"role": role, "content": text}))
        .collect();
    let v = match shape {
        Shape::Anthropic => json!({
            "model": model, "max_tokens": MAX_TOKENS, "system": SYSTEM,
            "messages": turns, "stream": stream,
        }),
        Shape::Chat => {
            let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
            messages.extend(turns);
            json!({"model": model, "max_tokens": MAX_TOKENS, "messages": messages, "stream": stream})
        }
        Shape::Responses => json!({
            "model": model, "instructions": SYSTEM, "input": turns,
            "max_output_tokens": MAX_TOKENS, "stream": stream, "store": false,
        }),
    };
    Bytes::from(v.to_string())
}

fn header_map(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
    h
}

fn host(addr: SocketAddr) -> String {
    addr.to_string()
}

/// A client's request to the gateway.
pub fn gateway_spec(addr: SocketAddr, path: &str, body: Option<Bytes>) -> ReqSpec {
    let host = host(addr);
    let mut pairs: Vec<(&'static str, &str)> = vec![("host", &host), ("accept", "*/*")];
    if body.is_some() {
        pairs.push(("content-type", "application/json"));
    }
    if path.starts_with("/v1/messages") {
        pairs.push(("anthropic-version", "2023-06-01"));
    }
    spec(path, pairs, body)
}

/// The call a gateway makes to Factory, for the mock directly (the headers the mock checks).
pub fn direct_spec(addr: SocketAddr, shape: Shape, body: Bytes, key: &str) -> ReqSpec {
    let host = host(addr);
    let auth = format!("Bearer {key}");
    let mut pairs: Vec<(&'static str, &str)> = vec![
        ("host", &host),
        ("content-type", "application/json"),
        ("authorization", &auth),
        ("x-factory-client", "cli"),
        ("x-session-id", "7d3c1a36-1f0a-4b8e-9d55-2f5f0b1c9e01"),
        (
            "x-assistant-message-id",
            "0c2b6f1e-5a8d-4c3e-b1f7-9a6e2d4c8b10",
        ),
        ("user-agent", "factory-cli/0.85.0"),
        ("connection", "keep-alive"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-lang", "js"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-runtime", "node"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-package-version", "0.57.0"),
        ("x-stainless-runtime-version", "v24.3.0"),
    ];
    let path = match shape {
        Shape::Anthropic => {
            pairs.extend([
                ("x-api-provider", "anthropic"),
                ("accept", "application/json"),
                ("anthropic-version", "2023-06-01"),
                ("x-api-key", "placeholder"),
                ("x-stainless-timeout", "600"),
            ]);
            "/api/llm/a/v1/messages"
        }
        Shape::Responses => {
            pairs.push(("x-api-provider", "azure_openai"));
            "/api/llm/o/v1/responses"
        }
        Shape::Chat => {
            pairs.extend([
                ("x-api-provider", "baseten"),
                ("accept", "application/json"),
            ]);
            "/api/llm/o/v1/chat/completions"
        }
    };
    spec(path, pairs, Some(body))
}

/// `GET /v1/models` on the mock: the rig's floor for a request without an upstream call.
pub fn direct_models_spec(addr: SocketAddr) -> ReqSpec {
    let host = host(addr);
    spec("/v1/models", vec![("host", &host), ("accept", "*/*")], None)
}

fn spec(path: &str, pairs: Vec<(&'static str, &str)>, body: Option<Bytes>) -> ReqSpec {
    let method = if body.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    ReqSpec {
        method,
        uri: path.parse().unwrap_or_else(|_| Uri::from_static("/")),
        headers: header_map(&pairs),
        body: body.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_and_bodies_have_the_requested_size_and_shape() {
        let conv = conversation(20, 400);
        assert_eq!(conv.len(), 20);
        assert_eq!(conv[0].0, "user");
        assert_eq!(conv[19].0, "assistant");
        assert!(conv.iter().all(|(_, t)| t.len() <= 400 && t.len() > 350));
        let a: Value =
            serde_json::from_slice(&body(Shape::Anthropic, CLAUDE, &conv, true)).expect("json");
        assert_eq!(a["messages"].as_array().map(Vec::len), Some(20));
        assert_eq!(a["stream"], true);
        let c: Value =
            serde_json::from_slice(&body(Shape::Chat, CLAUDE, &conv, false)).expect("json");
        assert_eq!(c["messages"][0]["role"], "system");
        assert_eq!(c["messages"].as_array().map(Vec::len), Some(21));
        let r: Value =
            serde_json::from_slice(&body(Shape::Responses, GPT, &conv, false)).expect("json");
        assert_eq!(r["input"].as_array().map(Vec::len), Some(20));
        let size = body(Shape::Chat, CLAUDE, &conv, false).len();
        assert!((8_000..10_000).contains(&size), "{size} bytes");
    }

    #[test]
    fn direct_specs_carry_the_factory_headers() {
        let addr: SocketAddr = ([127, 0, 0, 1], 9).into();
        let s = direct_spec(addr, Shape::Anthropic, Bytes::from_static(b"{}"), "fk-1");
        assert_eq!(s.uri.path(), "/api/llm/a/v1/messages");
        assert_eq!(s.headers["x-api-key"], "placeholder");
        assert_eq!(s.headers["authorization"], "Bearer fk-1");
        assert_eq!(s.headers["host"], "127.0.0.1:9");
        let s = direct_spec(addr, Shape::Responses, Bytes::new(), "fk-1");
        assert!(s.headers.get("x-api-key").is_none());
        let g = gateway_spec(addr, "/v1/models", None);
        assert_eq!(g.method, Method::GET);
        assert!(g.headers.get("content-type").is_none());
        let g = gateway_spec(addr, "/v1/messages", Some(Bytes::new()));
        assert_eq!(g.headers["anthropic-version"], "2023-06-01");
    }
}
