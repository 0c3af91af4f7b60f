//! What `/proc` says about a process tree: CPU time (utime + stime of every thread, from
//! `/proc/PID/stat`) and memory (`VmRSS`, `VmHWM` from `/proc/PID/status`), plus a sampler that
//! reads the resident size every 100 ms.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Fields of `/proc/PID/stat` this tool reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// utime + stime of all the process's threads, live and exited, in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses a `/proc/PID/stat` line. The command name sits in parentheses and may hold spaces
/// and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): field n is fields[n - 3].
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Stat {
        ppid,
        cpu_ticks: utime + stime,
    })
}

/// Memory lines of `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn parse_status(text: &str) -> Mem {
    let mut m = Mem::default();
    for line in text.lines() {
        let value = |l: &str| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if line.starts_with("VmRSS:") {
            m.rss_kib = value(line);
        } else if line.starts_with("VmHWM:") {
            m.hwm_kib = value(line);
        }
    }
    m
}

pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub fn mem(pid: u32) -> Option<Mem> {
    Some(parse_status(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
    ))
}

/// `pid` and every process descending from it (a gateway started through a wrapper, or one
/// that forks workers, is measured whole).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(s) = stat(p) {
                parents.push((p, s.ppid));
            }
        }
    }
    descendants_of(pid, &parents)
}

/// `root` and its descendants, given (pid, ppid) pairs.
pub fn descendants_of(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(c, pp)| *pp == p && *c != root)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    out
}

/// CPU ticks of a set of processes (those that are gone count 0).
pub fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| stat(*p))
        .map(|s| s.cpu_ticks)
        .sum()
}

/// Clock ticks per second (`USER_HZ`).
pub fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// The command name of a `/proc/…/stat` line (between the first `(` and the last `)`).
pub fn parse_comm(line: &str) -> Option<&str> {
    Some(&line[line.find('(')? + 1..line.rfind(')')?])
}

/// (thread id, name, CPU ticks) of every thread of the processes.
pub fn threads(pids: &[u32]) -> Vec<(u32, String, u64)> {
    let mut out = Vec::new();
    for pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for entry in dir.flatten() {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(line) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let (Some(comm), Some(st)) = (parse_comm(&line), parse_stat(&line)) {
                out.push((tid, comm.to_owned(), st.cpu_ticks));
            }
        }
    }
    out
}

/// Shares of the CPU used between two thread snapshots, per thread name, largest first.
pub fn shares_by_name(
    before: &[(u32, String, u64)],
    after: &[(u32, String, u64)],
) -> Vec<(String, f64)> {
    let mut by_name: Vec<(String, u64)> = Vec::new();
    for (tid, name, ticks) in after {
        let start = before
            .iter()
            .find(|(t, _, _)| t == tid)
            .map_or(0, |(_, _, k)| *k);
        let used = ticks.saturating_sub(start);
        match by_name.iter_mut().find(|(n, _)| n == name) {
            Some((_, u)) => *u += used,
            None => by_name.push((name.clone(), used)),
        }
    }
    let total: u64 = by_name.iter().map(|(_, u)| u).sum();
    let mut shares: Vec<(String, f64)> = by_name
        .into_iter()
        .filter(|(_, u)| *u > 0)
        .map(|(n, u)| (n, u as f64 / total.max(1) as f64))
        .collect();
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    shares
}

/// CPU time of a process tree between two points.
#[derive(Debug, Clone)]
pub struct CpuMark {
    pids: Vec<u32>,
    ticks: u64,
    threads: Vec<(u32, String, u64)>,
}

impl CpuMark {
    pub fn now(root: u32) -> Self {
        let pids = tree(root);
        let ticks = cpu_ticks(&pids);
        let threads = threads(&pids);
        Self {
            pids,
            ticks,
            threads,
        }
    }

    /// Where the CPU went since the mark, by thread name (`tokio-rt-worker 61%, …`); threads
    /// that exited meanwhile are not counted.
    pub fn by_thread(&self, root: u32) -> String {
        shares_by_name(&self.threads, &threads(&tree(root)))
            .iter()
            .take(5)
            .map(|(n, s)| format!("{n} {:.0}%", s * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Seconds of CPU used since the mark (processes born since are included).
    pub fn elapsed_cpu_s(&self, root: u32) -> f64 {
        let mut pids = tree(root);
        for p in &self.pids {
            if !pids.contains(p) {
                pids.push(*p);
            }
        }
        let now = cpu_ticks(&pids);
        now.saturating_sub(self.ticks) as f64 / ticks_per_second() as f64
    }
}

/// One RSS sample of a process tree.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub rss_kib: u64,
}

/// Samples the resident size of a process tree every 100 ms until dropped.
pub struct RssSampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: JoinHandle<()>,
    root: u32,
}

pub const SAMPLE_PERIOD: Duration = Duration::from_millis(100);

impl RssSampler {
    pub fn start(root: u32) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut pids = tree(root);
            let mut n = 0u32;
            loop {
                tick.tick().await;
                n += 1;
                if n.is_multiple_of(20) {
                    pids = tree(root);
                }
                let rss: u64 = pids.iter().filter_map(|p| mem(*p)).map(|m| m.rss_kib).sum();
                if rss > 0 {
                    let s = Sample {
                        at: Instant::now(),
                        rss_kib: rss,
                    };
                    out.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                }
            }
        });
        Self {
            samples,
            task,
            root,
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// RSS of the tree right now, in KiB.
    pub fn now_kib(&self) -> u64 {
        tree(self.root)
            .iter()
            .filter_map(|p| mem(*p))
            .map(|m| m.rss_kib)
            .sum()
    }

    /// The high-water mark of the tree's processes (`VmHWM`, summed), in KiB.
    pub fn hwm_kib(&self) -> u64 {
        tree(self.root)
            .iter()
            .filter_map(|p| mem(*p))
            .map(|m| m.hwm_kib)
            .sum()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Median of the samples taken inside any of the windows, and the largest sample overall.
pub fn rss_summary(samples: &[Sample], windows: &[(Instant, Instant)]) -> (Option<u64>, u64) {
    let mut inside: Vec<u64> = samples
        .iter()
        .filter(|s| windows.iter().any(|(a, b)| s.at >= *a && s.at <= *b))
        .map(|s| s.rss_kib)
        .collect();
    inside.sort_unstable();
    let median = (!inside.is_empty()).then(|| inside[inside.len() / 2]);
    let max = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    (median, max)
}

/// Load average (1, 5, 15 min) from `/proc/loadavg`.
pub fn loadavg() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The CPU model name from `/proc/cpuinfo`.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line =
            "4242 (tokio (rt) x) S 17 4242 4242 0 -1 4194560 1 0 0 0 250 75 3 4 20 0 9 0 1 2 3";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 17,
                cpu_ticks: 325
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn thread_names_and_shares() {
        assert_eq!(
            parse_comm("7 (tokio-rt-worker) S 1"),
            Some("tokio-rt-worker")
        );
        assert_eq!(parse_comm("7 (a (b)) S 1"), Some("a (b)"));
        let before = vec![(1, "main".to_owned(), 10), (2, "worker".to_owned(), 100)];
        let after = vec![
            (1, "main".to_owned(), 10),
            (2, "worker".to_owned(), 160),
            (3, "worker".to_owned(), 20),
            (4, "store".to_owned(), 20),
        ];
        let s = shares_by_name(&before, &after);
        assert_eq!(s.len(), 2, "threads that used nothing are left out: {s:?}");
        assert_eq!(s[0].0, "worker");
        assert!((s[0].1 - 0.8).abs() < 1e-9 && (s[1].1 - 0.2).abs() < 1e-9);
        let me = std::process::id();
        assert!(threads(&[me]).iter().any(|(t, _, _)| *t == me));
    }

    #[test]
    fn status_memory_lines() {
        let text = "Name:\tdroid2api\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t5\n";
        assert_eq!(
            parse_status(text),
            Mem {
                rss_kib: 10240,
                hwm_kib: 20480
            }
        );
    }

    #[test]
    fn descendants_follow_parent_links() {
        let parents = [(10, 1), (11, 10), (12, 11), (13, 1), (14, 10)];
        let mut d = descendants_of(10, &parents);
        d.sort_unstable();
        assert_eq!(d, vec![10, 11, 12, 14]);
        assert_eq!(descendants_of(99, &parents), vec![99]);
    }

    #[test]
    fn this_process_has_cpu_and_memory() {
        let me = std::process::id();
        assert!(mem(me).is_some_and(|m| m.rss_kib > 0 && m.hwm_kib >= m.rss_kib));
        let s = stat(me).expect("own stat");
        assert!(s.ppid > 0);
        assert!(tree(me).contains(&me));
    }

    #[test]
    fn rss_summary_takes_the_median_inside_windows() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let samples: Vec<Sample> = [(0, 100), (100, 300), (200, 200), (300, 400), (400, 900)]
            .iter()
            .map(|&(ms, rss)| Sample {
                at: at(ms),
                rss_kib: rss,
            })
            .collect();
        assert_eq!(
            rss_summary(&samples, &[(at(100), at(300))]),
            (Some(300), 900)
        );
        assert_eq!(rss_summary(&samples, &[]), (None, 900));
    }
}
