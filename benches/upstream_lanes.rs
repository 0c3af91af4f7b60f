//! Upstream connections under an HTTP/2 stream cap: the measurement behind `upstream::client`.
//!
//! The mock serves h2c (HTTP/2 without TLS, prior knowledge) and HTTP/1.1 on one port and
//! advertises `SETTINGS_MAX_CONCURRENT_STREAMS = 100`, as Factory's TLS front does over ALPN.
//! Every request is answered after 200 ms. One iteration = 500 concurrent POSTs, all awaited:
//!
//! - `lanes_h2c`: the gateway's [`Upstream`] (lanes of at most 100 requests, a new HTTP/2
//!   connection when all are full);
//! - `single_h2c`: one reqwest client, hence one HTTP/2 connection (the setup before lanes):
//!   past 100 in flight, requests wait for a stream slot;
//! - `http1`: one reqwest client speaking HTTP/1.1 (one connection per concurrent request,
//!   then kept in its idle pool).
//!
//! The ideal is 200 ms (every request at once). The mock's connection count for each variant
//! is printed to stderr. `cargo bench --bench upstream_lanes` measures; see BENCHMARKS.md.

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use criterion::{Criterion, criterion_group, criterion_main};
use droid2api::config::{Env, Settings};
use droid2api::upstream::{Upstream, UpstreamRequest};
use droid2api_mock::{MockOptions, MockUpstream, Reply, Rule};
use serde_json::json;

const CONCURRENCY: usize = 500;
const ANSWER_MS: u64 = 200;

async fn mock() -> MockUpstream {
    let mock = MockUpstream::start_with(MockOptions {
        http2_max_concurrent_streams: Some(100),
        ..MockOptions::default()
    })
    .await;
    mock.push_rule(
        Rule::new(Reply::json(200, json!({"ok": true})).with_delay_ms(ANSWER_MS)).path("/bench"),
    );
    mock
}

fn upstream(prior_knowledge: bool) -> Upstream {
    let env = Env::from_pairs([("FACTORY_API_KEY", "fk-bench")]);
    let mut settings = Settings::from_sources(&env, None).expect("default settings");
    settings.upstream_http2_prior_knowledge = prior_knowledge;
    Upstream::new(&settings).expect("upstream client")
}

/// One round through the gateway's client.
async fn round_lanes(up: &Upstream, url: &str) {
    let calls = (0..CONCURRENCY).map(|_| async {
        let resp = up
            .send(UpstreamRequest {
                url: url.to_string(),
                headers: HeaderMap::new(),
                body: bytes::Bytes::from_static(b"{}"),
            })
            .await
            .expect("answered");
        assert_eq!(resp.status(), 200);
        resp.bytes().await.expect("body");
    });
    futures_util::future::join_all(calls).await;
}

/// One round through a bare reqwest client.
async fn round_plain(client: &reqwest::Client, url: &str) {
    let calls = (0..CONCURRENCY).map(|_| async {
        let resp = client.post(url).body("{}").send().await.expect("answered");
        assert_eq!(resp.status(), 200);
        resp.bytes().await.expect("body");
    });
    futures_util::future::join_all(calls).await;
}

fn bench_lanes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mock = rt.block_on(mock());
    let url = format!("{}/bench", mock.url());
    let mut g = c.benchmark_group("upstream_500_concurrent");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));

    let lanes = rt.block_on(async { upstream(true) });
    let before = mock.connections();
    g.bench_function("lanes_h2c", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    round_lanes(&lanes, &url).await;
                }
                t.elapsed()
            })
        })
    });
    eprintln!(
        "lanes_h2c: {} connections, lanes open {:?}",
        mock.connections() - before,
        lanes.lanes()
    );

    let single = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .expect("client");
    let before = mock.connections();
    g.bench_function("single_h2c", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    round_plain(&single, &url).await;
                }
                t.elapsed()
            })
        })
    });
    eprintln!("single_h2c: {} connections", mock.connections() - before);

    let http1 = reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .build()
        .expect("client");
    let before = mock.connections();
    g.bench_function("http1", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    round_plain(&http1, &url).await;
                }
                t.elapsed()
            })
        })
    });
    eprintln!("http1: {} connections", mock.connections() - before);
    g.finish();
}

criterion_group!(benches, bench_lanes);
criterion_main!(benches);
