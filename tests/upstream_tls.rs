//! The upstream client speaks TLS with the settings built once at start-up
//! (`upstream::client::tls_config`): it offers `h2` and `http/1.1`, verifies the server's
//! certificate against the system's roots, and refuses one they do not vouch for, as a
//! transport failure that blames no key.
//!
//! The server here is a thread speaking rustls over a loopback socket, with a self-signed
//! test-only certificate (`tests/fixtures/tls/`, made with
//! `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500
//! -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost`).

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What one connection's ClientHello offered.
#[derive(Debug, Clone)]
struct Hello {
    alpn: Vec<String>,
}

/// Accepts TLS connections with the untrusted certificate; records each ClientHello.
fn untrusted_tls_server() -> (String, Arc<Mutex<Vec<Hello>>>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("untrusted-cert.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("untrusted-key.pem")).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let hellos = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&hellos);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut acceptor = rustls::server::Acceptor::default();
            let accepted = loop {
                if acceptor.read_tls(&mut stream).unwrap_or(0) == 0 {
                    break None;
                }
                match acceptor.accept() {
                    Ok(Some(a)) => break Some(a),
                    Ok(None) => continue,
                    Err(_) => break None,
                }
            };
            let Some(accepted) = accepted else { continue };
            let alpn = accepted
                .client_hello()
                .alpn()
                .map(|i| i.map(|p| String::from_utf8_lossy(p).into_owned()).collect())
                .unwrap_or_default();
            seen.lock().unwrap().push(Hello { alpn });
            if let Ok(mut conn) = accepted.into_connection(Arc::clone(&config)) {
                // The client rejects the certificate and closes: the error is expected.
                let _ = conn.complete_io(&mut stream);
            }
        }
    });
    (url, hellos)
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_is_refused_and_blames_no_key() {
    let mock = MockUpstream::start().await;
    let (url, hellos) = untrusted_tls_server();
    let gw = gateway(&mock)
        .env("FACTORY_BASE_URL", url)
        .env("FACTORY_API_KEY", "fk-tls-test-key-0123456789")
        .start()
        .await;
    // Every request opens a connection (none succeeds) with the shared TLS settings; had the
    // first failure cooled the key, the later ones would get 429 instead of the same 502.
    for i in 0..3 {
        let (s, _, b) = post(
            &gw.url("/v1/messages"),
            &anthropic_body("claude-opus-4-6"),
            &[],
        )
        .await;
        let text = String::from_utf8_lossy(&b);
        assert_eq!(s, 502, "request {i}: {text}");
        assert!(
            text.contains("could not connect to the upstream (tls)"),
            "request {i}: {text}"
        );
    }
    let hellos = hellos.lock().unwrap().clone();
    assert!(hellos.len() >= 3, "one handshake per request: {hellos:?}");
    for h in &hellos {
        assert_eq!(h.alpn, ["h2", "http/1.1"], "ALPN offered");
    }
    // And the gateway still serves through a working upstream.
    drop(gw);
    let gw = gateway(&mock)
        .env("FACTORY_API_KEY", "fk-tls-test-key-0123456789")
        .start()
        .await;
    let (s, _, b) = post(
        &gw.url("/v1/messages"),
        &anthropic_body("claude-opus-4-6"),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
}
