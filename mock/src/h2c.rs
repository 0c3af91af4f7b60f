//! Serving HTTP/1.1 and HTTP/2 without TLS (h2c, prior knowledge) on one port, with a cap on
//! concurrent HTTP/2 streams per connection: what Factory's TLS front negotiates through ALPN,
//! reproduced without certificates.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::state::Shared;

/// Accepts connections until the mock shuts down; each is served on its own task.
pub(crate) async fn serve(listener: TcpListener, app: Router, shared: Arc<Shared>, cap: u32) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(cap);
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown_signalled() => return,
            a = listener.accept() => a,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::debug!("mock: accept failed: {e}");
                continue;
            }
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("mock: set_nodelay failed: {e}");
        }
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            if let Err(e) = builder.serve_connection(TokioIo::new(tcp), service).await {
                tracing::debug!("mock: connection ended with an error: {e}");
            }
        });
    }
}
