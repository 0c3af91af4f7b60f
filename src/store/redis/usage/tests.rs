use super::*;
use crate::secret::Secret;
use crate::store::records::{StoreOp, UsageRecord};

fn sums(n: u64) -> UsageTotals {
    UsageTotals {
        requests: n,
        successes: n.saturating_sub(1),
        tokens: Tokens {
            input_tokens: 10 * n,
            cache_read_tokens: 3,
            cache_write_tokens: 2,
            output_tokens: u64::MAX,
            reasoning_tokens: 1,
        },
    }
}

#[test]
fn fields_and_sums_round_trip() {
    for value in ["", "key_abc", "claude|opus|4", "a,b", "  spaced "] {
        let r = RollupRow {
            granularity: "hour".into(),
            dim: "model".into(),
            value: value.into(),
            bucket_start: -3_600_000,
            totals: sums(7),
        };
        let f = field(&r);
        assert_eq!(decode(&f, &encode(&r.totals)), Some(r), "{f}");
    }
    assert_eq!(
        encode(&sums(2)),
        format!("2,1,20,3,2,{},1", u64::MAX),
        "requests, successes, input, cache read, cache write, output, reasoning"
    );
}

#[test]
fn what_this_version_cannot_read_is_skipped() {
    let ok = "1,1,1,1,1,1,1";
    assert!(decode("total|all||0", ok).is_some());
    assert!(decode("week|all||0", ok).is_none(), "unknown granularity");
    assert!(decode("day|route|x|0", ok).is_none(), "unknown dimension");
    assert!(decode("day|key|x|soon", ok).is_none());
    assert!(decode("day|key", ok).is_none());
    assert!(decode("day|key|x|0", "1,2,3").is_none());
    assert!(decode("day|key|x|0", "1,2,3,4,5,6,-7").is_none());
    // More sums than known (a later version's): the known ones are read.
    assert_eq!(
        decode("day|key|x|0", "1,1,1,1,1,1,1,9").map(|r| r.totals.requests),
        Some(1)
    );
}

// ----- against a real redis-server ---------------------------------------------------------------

struct Server {
    child: std::process::Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A throw-away redis-server on a free port, or `None` when it is not installed.
async fn redis_server() -> Option<Server> {
    if !std::path::Path::new(REDIS_SERVER).exists() {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    Some(redis_server_on(port).await)
}

async fn redis_server_on(port: u16) -> Server {
    let child = std::process::Command::new(REDIS_SERVER)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Server { child, port }
}

struct Node {
    shared: Arc<Shared>,
    store: Store,
    publisher: Publisher,
    reader: Reader,
    _dir: tempfile::TempDir,
}

impl Node {
    fn new(port: u16, inst: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        store.include_fleet(true);
        let url = Secret::new(format!("redis://127.0.0.1:{port}/0"));
        Node {
            shared: Shared::open(&url, inst.to_string()).unwrap(),
            store,
            publisher: Publisher::new(),
            reader: Reader::default(),
            _dir: dir,
        }
    }

    async fn traffic(&self, n: usize, key: &str) {
        let at = 1_700_000_000_000;
        let rec = UsageRecord {
            at,
            hour_start: at - at % 3_600_000,
            day_start: at - at % 86_400_000,
            credential: key.into(),
            attempts: 1,
            client: "c".into(),
            model: "m".into(),
            route: "/v1/messages".into(),
            upstream_format: "anthropic".into(),
            status: 200,
            input_tokens: 1,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: 1,
            reasoning_tokens: 0,
            estimated: false,
            complete: true,
            latency_ms: 1,
            ttfb_ms: None,
        };
        self.store
            .commit(vec![StoreOp::AddUsage(vec![rec; n])])
            .await
            .unwrap();
    }

    /// One publish and one read, each tried again (as the task does every second) while the
    /// connection comes back after a Redis restart.
    async fn round(&mut self) {
        let mut tries = 0;
        while let Err(e) = self.publisher.round(&self.shared, &self.store).await {
            tries += 1;
            assert!(tries < 30, "{e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        while let Err(e) = self.reader.round(&self.shared, &self.store).await {
            tries += 1;
            assert!(tries < 30, "{e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn requests(&self) -> u64 {
        self.store
            .usage_totals(1_700_000_000_000 - 1_700_000_000_000 % 86_400_000)
            .await
            .unwrap()
            .0
            .requests
    }

    async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        self.shared.query(LIMIT, cmd).await.unwrap()
    }
}

async fn seed_meta(n: &Node, epoch: &str, insts: &[&str]) {
    let _: () = n
        .cmd(redis::cmd("HSET").arg(k("meta")).arg("epoch").arg(epoch))
        .await;
    for i in insts {
        let _: () = n
            .cmd(redis::cmd("ZADD").arg(k("inst")).arg(1).arg(*i))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_publish_changes_and_mirror_each_other_through_an_empty_restart() {
    let Some(server) = redis_server().await else {
        eprintln!("redis-server not installed: skipped");
        return;
    };
    let mut a = Node::new(server.port, "a");
    let mut b = Node::new(server.port, "b");
    // Nothing is published before Redis is seeded (`meta` missing).
    a.traffic(3, "k1").await;
    a.round().await;
    let n: u64 = a.cmd(&redis::cmd("DBSIZE")).await;
    assert_eq!(n, 0);

    seed_meta(&a, "e1", &["a", "b"]).await;
    b.traffic(2, "k2").await;
    a.round().await;
    b.round().await;
    a.round().await;
    assert_eq!((a.requests().await, b.requests().await), (5, 5));
    let fields: u64 = a.cmd(redis::cmd("HLEN").arg(hash_key("a"))).await;
    assert_eq!(fields, 12, "all, k1, m, c in 3 granularities");
    let marker: i64 = a.cmd(redis::cmd("GET").arg(pub_key("a"))).await;
    assert_eq!(marker, a.store.rollups_max_seq().await.unwrap());

    // Only what changed is published again, with a higher score.
    let before: Vec<(String, f64)> = a
        .cmd(
            redis::cmd("ZRANGE")
                .arg(chg_key("a"))
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"),
        )
        .await;
    a.traffic(1, "k3").await;
    a.round().await;
    let after: Vec<(String, f64)> = a
        .cmd(
            redis::cmd("ZRANGE")
                .arg(chg_key("a"))
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"),
        )
        .await;
    let top = before.iter().map(|e| e.1).fold(0.0, f64::max);
    let moved = after.iter().filter(|e| e.1 > top).count();
    assert_eq!(moved, 12, "all, k3, m, c in 3 granularities: {after:?}");
    b.round().await;
    assert_eq!(b.requests().await, 6);

    // A restarted instance continues from the marker: nothing is written again.
    let mut a2 = Publisher::new();
    a2.round(&a.shared, &a.store).await.unwrap();
    let again: Vec<(String, f64)> = a
        .cmd(
            redis::cmd("ZRANGE")
                .arg(chg_key("a"))
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"),
        )
        .await;
    assert_eq!(again, after);

    // Redis comes back empty and is seeded again; b is gone for good. a publishes everything it
    // has and what it mirrors of b.
    let _: () = a.cmd(&redis::cmd("FLUSHALL")).await;
    seed_meta(&a, "e2", &["a"]).await;
    a.round().await;
    let own: u64 = a.cmd(redis::cmd("HLEN").arg(hash_key("a"))).await;
    let of_b: u64 = a.cmd(redis::cmd("HLEN").arg(hash_key("b"))).await;
    assert_eq!((own, of_b), (15, 12));
    let insts: Vec<String> = a
        .cmd(redis::cmd("ZRANGE").arg(k("inst")).arg(0).arg(-1))
        .await;
    assert_eq!(insts, ["b", "a"]);

    // A newcomer sees the whole fleet.
    let mut c = Node::new(server.port, "c");
    c.round().await;
    assert_eq!(c.requests().await, 6);
    // b's own republish (it came back) overwrites the seeded copy.
    b.traffic(4, "k2").await;
    b.round().await;
    c.round().await;
    assert_eq!(c.requests().await, 10);
    a.round().await;
    assert_eq!(a.requests().await, 10);

    // Redis down: rounds fail and nothing is lost; they catch up once it is back.
    let port = server.port;
    drop(server);
    a.traffic(1, "k1").await;
    assert!(a.publisher.round(&a.shared, &a.store).await.is_err());
    let server = redis_server_on(port).await;
    seed_meta(&a, "e3", &["a", "b", "c"]).await;
    a.round().await;
    b.round().await;
    c.round().await;
    assert_eq!(c.requests().await, 11);
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn more_seeded_fields_than_a_page_are_all_read() {
    let Some(server) = redis_server().await else {
        eprintln!("redis-server not installed: skipped");
        return;
    };
    let mut a = Node::new(server.port, "a");
    // What a mirrors of an instance that is gone: more hourly rows than a reader's page.
    let n = PAGE + PAGE / 2;
    let rows: Vec<RollupRow> = (0..n)
        .map(|i| RollupRow {
            granularity: "hour".into(),
            dim: "all".into(),
            value: String::new(),
            bucket_start: i as i64 * 3_600_000,
            totals: sums(1),
        })
        .collect();
    a.store.mirror_fleet("z", rows, Some(7)).await.unwrap();
    seed_meta(&a, "e1", &["a"]).await;
    a.round().await;
    let _: () = a.cmd(&redis::cmd("FLUSHALL")).await;
    seed_meta(&a, "e2", &["a"]).await;
    a.round().await;
    let seeded: u64 = a.cmd(redis::cmd("HLEN").arg(hash_key("z"))).await;
    assert_eq!(seeded, n as u64);

    let mut c = Node::new(server.port, "c");
    c.round().await;
    let mut count = 0;
    let mut after = None;
    loop {
        let page = c.store.fleet_mirror_page(after, 1000).await.unwrap();
        let Some((inst, last)) = page.last() else {
            break;
        };
        after = Some((
            last.granularity.clone(),
            last.dim.clone(),
            last.value.clone(),
            last.bucket_start,
            inst.clone(),
        ));
        count += page.iter().filter(|(i, _)| i == "z").count();
    }
    assert_eq!(count, n);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_lost_the_tail_gets_it_again() {
    let Some(server) = redis_server().await else {
        eprintln!("redis-server not installed: skipped");
        return;
    };
    let mut a = Node::new(server.port, "a");
    let mut b = Node::new(server.port, "b");
    seed_meta(&a, "e1", &["a", "b"]).await;
    a.traffic(1, "k1").await;
    a.round().await;
    let first = a.store.rollups_max_seq().await.unwrap();
    a.traffic(2, "k2").await;
    a.round().await;
    // Redis restarted from a snapshot taken between the two publishes (same epoch): its marker
    // says the first publish. (Here the first publish's rows are gone too, which a snapshot
    // would hold: what lies behind the marker is trusted, and only k1's rows stay missing.)
    let _: () = a.cmd(&redis::cmd("FLUSHALL")).await;
    seed_meta(&a, "e1", &["a", "b"]).await;
    let _: () = a.cmd(redis::cmd("SET").arg(pub_key("a")).arg(first)).await;
    a.round().await;
    let fields: u64 = a.cmd(redis::cmd("HLEN").arg(hash_key("a"))).await;
    assert_eq!(
        fields, 12,
        "all, m, c, k2 in 3 granularities (k1's row is lost)"
    );
    b.round().await;
    assert_eq!(b.requests().await, 3);
    let marker: i64 = a.cmd(redis::cmd("GET").arg(pub_key("a"))).await;
    assert_eq!(marker, a.store.rollups_max_seq().await.unwrap());
}
