//! `droid2api-floor`: the least a proxy can do on this rig, as a yardstick for the gateway.
//!
//! It speaks just enough of the gateway's surface for the `messages`, `messages-stream` and
//! `models` scenarios: `POST /v1/messages` is read whole (any gateway must see the body to
//! route it), sent to the mock's Anthropic route with the headers the bench mock checks, and
//! the reply is streamed back frame by frame; `GET /v1/models` answers a constant body;
//! `GET /ready` answers 200. No routing table, no credentials pool, no translation, no usage,
//! no logs, no metrics — so `droid2api-bench --compare target/release/droid2api-floor` shows
//! how much of the gateway's cost is the kernel, the runtime and HTTP/1 on both sides, which
//! no gateway on this machine can avoid.
//!
//! Same runtime shape as the gateway (tokio multi-thread, one worker per allowed CPU), hyper
//! HTTP/1 on both sides, `TCP_NODELAY` on both sides, a keep-alive upstream pool.
//! Environment: `HOST`, `PORT`, `FACTORY_BASE_URL`, `FACTORY_API_KEY` (what the bench gives
//! every gateway).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = Either<Full<Bytes>, Incoming>;

struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    messages: Uri,
    bearer: HeaderValue,
}

const MODELS: &[u8] = br#"{"object":"list","data":[{"id":"claude-sonnet-4-5-20250929","object":"model","created":0,"owned_by":"anthropic"}]}"#;

fn fixed(status: StatusCode, body: &'static [u8]) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from_static(body))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

async fn handle(up: Arc<Upstream>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready" | "/health") => Ok(fixed(StatusCode::OK, b"{\"status\":\"ok\"}")),
        (&Method::GET, "/v1/models") => Ok(fixed(StatusCode::OK, MODELS)),
        (&Method::POST, "/v1/messages") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return Ok(fixed(StatusCode::BAD_REQUEST, b"{\"error\":\"body\"}")),
            };
            let mut out = Request::new(Full::new(body));
            *out.method_mut() = Method::POST;
            *out.uri_mut() = up.messages.clone();
            let h = out.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert("authorization", up.bearer.clone());
            h.insert("x-factory-client", HeaderValue::from_static("cli"));
            h.insert("x-api-key", HeaderValue::from_static("placeholder"));
            h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
            match up.client.request(out).await {
                Ok(resp) => Ok(resp.map(Either::Right)),
                Err(_) => Ok(fixed(StatusCode::BAD_GATEWAY, b"{\"error\":\"upstream\"}")),
            }
        }
        _ => Ok(fixed(StatusCode::NOT_FOUND, b"{\"error\":\"not found\"}")),
    }
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("droid2api-floor: {name} is not set"))
}

fn setup() -> Result<(SocketAddr, Arc<Upstream>), String> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = env("PORT")?;
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|e| format!("droid2api-floor: HOST/PORT: {e}"))?;
    let base = env("FACTORY_BASE_URL")?;
    let messages: Uri = format!("{}/api/llm/a/v1/messages", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("droid2api-floor: FACTORY_BASE_URL: {e}"))?;
    let bearer = HeaderValue::try_from(format!("Bearer {}", env("FACTORY_API_KEY")?))
        .map_err(|e| format!("droid2api-floor: FACTORY_API_KEY: {e}"))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    Ok((
        addr,
        Arc::new(Upstream {
            client,
            messages,
            bearer,
        }),
    ))
}

async fn serve(addr: SocketAddr, up: Arc<Upstream>) -> Result<(), String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("droid2api-floor: bind {addr}: {e}"))?;
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let up = up.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(up.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn main() -> ExitCode {
    let run = || -> Result<(), String> {
        let (addr, up) = setup()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("droid2api-floor: runtime: {e}"))?;
        rt.block_on(serve(addr, up))
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
