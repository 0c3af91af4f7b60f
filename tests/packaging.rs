//! Packaging: the container files and `.env.example` agree with the binary. No image can be built
//! here, so the files are read as text: the Dockerfile's port, folders, user and health check
//! match the defaults of `droid2api::config`; `.dockerignore` keeps data and secrets out of the
//! build context (checked with a small matcher of Docker's pattern rules, itself tested here) and
//! lets in everything the Dockerfile copies; the compose file says what the Dockerfile says;
//! `.env.example` lists exactly README's Environment table, changes nothing as it is, and the
//! binary's `check-config` accepts it.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use droid2api::config::{Env, Redacted, Settings, Timing};
use droid2api::store::LOCK_FILE;
use droid2api::store::redis::INSTANCE_FILE;
use droid2api::store::sqlite::{DB_FILE, NODE_POOL_FILE, NODE_POOL_IMPORTED};

const BIN: &str = env!("CARGO_BIN_EXE_droid2api");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(repo().join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

// ---- Dockerfile ---------------------------------------------------------------------------------

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    /// Index of the `FROM` it belongs to; `None` before the first `FROM`.
    stage: Option<usize>,
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut stage: Option<usize> = None;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comments (and parser directives) and empty lines are dropped, also inside a continued
        // instruction, as Docker does.
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let (part, continued) = match trimmed.strip_suffix('\\') {
            Some(p) => (p.trim(), true),
            None => (trimmed, false),
        };
        if !pending.is_empty() {
            pending.push(' ');
        }
        pending.push_str(part);
        if continued {
            continue;
        }
        let full = std::mem::take(&mut pending);
        let (keyword, args) = full
            .split_once(char::is_whitespace)
            .unwrap_or((full.as_str(), ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stage = Some(stage.map_or(0, |s| s + 1));
        }
        out.push(Instruction {
            stage,
            keyword,
            args: args.trim().to_string(),
        });
    }
    assert!(
        pending.is_empty(),
        "Dockerfile ends inside a continued line"
    );
    out
}

/// The arguments of every `keyword` instruction of one stage.
fn all<'a>(ins: &'a [Instruction], stage: usize, keyword: &str) -> Vec<&'a str> {
    ins.iter()
        .filter(|i| i.stage == Some(stage) && i.keyword == keyword)
        .map(|i| i.args.as_str())
        .collect()
}

/// The arguments of the one `keyword` instruction of a stage (the last, as Docker uses it).
fn last<'a>(ins: &'a [Instruction], stage: usize, keyword: &str) -> &'a str {
    all(ins, stage, keyword)
        .last()
        .copied()
        .unwrap_or_else(|| panic!("Dockerfile stage {stage} has no {keyword}"))
}

/// An exec-form argument list: `["a", "b"]`.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args.trim())
        .unwrap_or_else(|e| panic!("expected exec form [\"…\"], got {args:?}: {e}"))
}

/// Stage index by `AS name`, and the last stage (the image).
fn stages(ins: &[Instruction]) -> (BTreeMap<String, usize>, usize) {
    let mut names = BTreeMap::new();
    let mut final_stage = 0;
    for i in ins.iter().filter(|i| i.keyword == "FROM") {
        let stage = i.stage.expect("FROM opens a stage");
        let words: Vec<&str> = i.args.split_whitespace().collect();
        if let [_, as_kw, name] = words[..]
            && as_kw.eq_ignore_ascii_case("as")
        {
            names.insert(name.to_string(), stage);
        }
        final_stage = stage;
    }
    (names, final_stage)
}

/// The base image of a stage, `ARG` defaults (declared before the first `FROM`) substituted.
fn base_image(ins: &[Instruction], stage: usize) -> String {
    let mut image = last(ins, stage, "FROM")
        .split_whitespace()
        .next()
        .expect("FROM names an image")
        .to_string();
    for arg in ins
        .iter()
        .filter(|i| i.stage.is_none() && i.keyword == "ARG")
    {
        if let Some((name, value)) = arg.args.split_once('=') {
            image = image
                .replace(&format!("${{{name}}}"), value)
                .replace(&format!("${name}"), value);
        }
    }
    assert!(!image.contains('$'), "unresolved ARG in {image}");
    image
}

/// `ENV` pairs of a stage (`KEY=value` form, no quotes).
fn env_of(ins: &[Instruction], stage: usize) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for args in all(ins, stage, "ENV") {
        for pair in args.split_whitespace() {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("ENV: expected KEY=value, got {pair:?}"));
            assert!(
                !v.contains('"') && !v.contains('\''),
                "ENV values are plain here: {pair}"
            );
            env.insert(k.to_string(), v.to_string());
        }
    }
    env
}

/// A path as the container sees it from `workdir` (`.` components removed).
fn in_container(workdir: &str, p: &Path) -> PathBuf {
    Path::new(workdir)
        .join(p)
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

/// `major.minor` of a version string.
fn minor_version(v: &str) -> (u32, u32) {
    let mut it = v
        .split('.')
        .map(|n| n.parse::<u32>().expect("numeric version"));
    (it.next().expect("major"), it.next().unwrap_or(0))
}

#[test]
fn dockerfile_port_folders_user_and_health_match_the_binary() {
    let ins = dockerfile();
    let (_, image) = stages(&ins);
    let workdir = last(&ins, image, "WORKDIR");
    assert_eq!(workdir, "/app");

    // The settings the binary builds from the image's environment alone (no .env, no config.json).
    let env = env_of(&ins, image);
    let in_image = Settings::from_sources(&Env::from_pairs(env.clone()), None).unwrap();
    let defaults = Settings::from_sources(&Env::default(), None).unwrap();

    // Port: EXPOSE is the default port, and the image does not move it.
    let exposed: Vec<u16> = last(&ins, image, "EXPOSE")
        .split_whitespace()
        .map(|p| p.trim_end_matches("/tcp").parse().expect("a port number"))
        .collect();
    assert_eq!(exposed, [defaults.port]);
    assert_eq!(in_image.port, defaults.port);
    assert!(!env.contains_key("PORT"), "PORT is the binary's default");

    // Address: every interface, so that the published port reaches the gateway.
    let host: std::net::IpAddr = in_image.host.parse().expect("HOST is an IP address");
    assert!(
        host.is_unspecified(),
        "the container must listen on all interfaces, listens on {host}"
    );

    // Data: the volume is the data folder, both as the image sets it and as the binary's default
    // (./data) seen from WORKDIR, so a .env with DATA_DIR=./data still writes into the volume.
    let volume = last(&ins, image, "VOLUME");
    let volumes: Vec<String> = if volume.starts_with('[') {
        exec_form(volume)
    } else {
        volume.split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(volumes.len(), 1, "one volume: the data folder");
    let volume = PathBuf::from(&volumes[0]);
    assert_eq!(in_container(workdir, &in_image.data_dir), volume);
    assert_eq!(in_container(workdir, &defaults.data_dir), volume);
    // Logs: inside /app, where the default points too.
    let log_dir = in_container(workdir, &in_image.log_dir);
    assert_eq!(log_dir, in_container(workdir, &defaults.log_dir));
    assert!(log_dir.starts_with(workdir));

    // User: not root, created with that uid, owning the folders before VOLUME copies them.
    let user = last(&ins, image, "USER");
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    assert!(
        !["root", "0"].contains(&uid) && !["root", "0"].contains(&gid),
        "the image must not run as root (USER {user})"
    );
    let runs = all(&ins, image, "RUN").join("\n");
    assert!(
        runs.contains(&format!("--uid {uid}")) && runs.contains(&format!("--gid {gid}")),
        "USER {user} is created by a RUN useradd --uid {uid} --gid {gid}"
    );
    assert!(
        runs.contains(&format!("chown -R {uid}:{gid} {workdir}")),
        "the user owns {workdir} (and so the data and log folders)"
    );
    for dir in [&volume, &log_dir] {
        assert!(
            runs.contains(&dir.display().to_string()),
            "{} is created in the image",
            dir.display()
        );
    }
    // Every RUN (the steps that need root) comes before USER.
    let position = |kw: &str| {
        ins.iter()
            .rposition(|i| i.stage == Some(image) && i.keyword == kw)
            .unwrap()
    };
    assert!(position("RUN") < position("USER"));

    // Health check and start command: the binary itself.
    let health = last(&ins, image, "HEALTHCHECK");
    let (options, cmd) = health
        .split_once("CMD ")
        .expect("HEALTHCHECK [options] CMD […]");
    assert!(options.contains("--interval=") && options.contains("--timeout="));
    assert_eq!(exec_form(cmd), ["droid2api", "health"]);
    assert_eq!(exec_form(last(&ins, image, "ENTRYPOINT")), ["droid2api"]);
    assert_eq!(exec_form(last(&ins, image, "CMD")), ["serve"]);
    let serve = Command::new(BIN)
        .args(["serve", "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(serve.status.success(), "`droid2api serve` is a command");

    // The binary lands on the PATH where the ENTRYPOINT finds it.
    let copies = all(&ins, image, "COPY");
    assert!(
        copies
            .iter()
            .any(|c| c.starts_with("--from=build ") && c.ends_with(" /usr/local/bin/droid2api")),
        "the binary is copied from the build stage to /usr/local/bin/droid2api: {copies:?}"
    );
}

#[test]
fn dockerfile_builds_the_release_binary_on_a_matching_toolchain() {
    let ins = dockerfile();
    let (names, image) = stages(&ins);
    let build = *names.get("build").expect("a stage named build");
    assert!(build < image);

    // The builder: the official Rust image, at least Cargo.toml's rust-version, on the Debian
    // release of the runtime image (the binary links that glibc).
    let builder = base_image(&ins, build);
    let runtime = base_image(&ins, image);
    let (version, debian) = builder
        .strip_prefix("rust:")
        .and_then(|t| t.split_once('-'))
        .unwrap_or_else(|| panic!("expected rust:VERSION-DEBIAN, got {builder}"));
    let cargo_toml = read("Cargo.toml");
    let msrv = cargo_toml
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("Cargo.toml has a rust-version")
        .trim_matches('"');
    assert!(
        minor_version(version) >= minor_version(msrv),
        "builder {builder} is older than rust-version {msrv}"
    );
    assert_eq!(runtime, format!("debian:{debian}-slim"));

    let runs = all(&ins, build, "RUN").join("\n");
    assert!(
        runs.contains("cargo build --release --locked --bin droid2api")
            && runs.contains("target/release/droid2api"),
        "a locked release build of the droid2api binary: {runs}"
    );

    // What the build stage copies exists, and enters the build context.
    let ignore = DockerIgnore::parse(&read(".dockerignore"));
    let mut copied = BTreeSet::new();
    for copy in all(&ins, build, "COPY") {
        let words: Vec<&str> = copy.split_whitespace().collect();
        assert!(
            !copy.starts_with("--from"),
            "the build copies from the context"
        );
        for src in &words[..words.len() - 1] {
            assert!(repo().join(src).exists(), "COPY {src}: no such path");
            assert!(
                !ignore.excludes(src),
                "COPY {src}: .dockerignore leaves it out"
            );
            copied.insert(src.to_string());
        }
    }
    // Everything Cargo reads: the manifest and lock file, the build script, the sources, the
    // console build.rs embeds, the declared benches and every workspace member.
    let members = cargo_toml
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .expect("a workspace members list");
    let members: Vec<String> = serde_json::from_str(members).expect("members as a list");
    let mut needed: Vec<&str> = vec!["Cargo.toml", "Cargo.lock", "build.rs", "src", "ui"];
    if cargo_toml.contains("[[bench]]") {
        needed.push("benches");
    }
    needed.extend(members.iter().map(String::as_str).filter(|m| *m != "."));
    for n in needed {
        assert!(copied.contains(n), "the build stage does not COPY {n}");
    }
    // No file of those folders that the build reads is left out of the context.
    for src in &copied {
        for file in files_under(&repo().join(src)) {
            let rel = file
                .strip_prefix(repo())
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let read_by_build = rel.starts_with("ui/")
                || rel.ends_with(".rs")
                || rel.ends_with("Cargo.toml")
                || rel.ends_with("Cargo.lock");
            if read_by_build {
                assert!(!ignore.excludes(&rel), ".dockerignore leaves out {rel}");
            }
        }
    }
}

/// Every file under `path` (itself when a file), skipping build output.
fn files_under(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        out.extend(files_under(&p));
    }
    out
}

// ---- .dockerignore --------------------------------------------------------------------------------

/// The subset of Docker's `.dockerignore` rules this repository uses: one pattern a line, `#`
/// comments, paths from the context root (a leading `/` and a trailing `/` change nothing), `*`
/// and `?` within one path element, `**` for any number of elements, `!` to take a path back,
/// the last matching line wins, and a pattern that matches a folder matches all inside it.
struct DockerIgnore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    fn parse(text: &str) -> Self {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keep, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let elements: Vec<String> = pattern
                .split('/')
                .filter(|e| !e.is_empty() && *e != ".")
                .map(str::to_string)
                .collect();
            for e in &elements {
                assert!(
                    !e.contains(['[', '\\']) && (e == "**" || !e.contains("**")) && e != "..",
                    ".dockerignore: {line:?} uses syntax this matcher does not implement"
                );
            }
            patterns.push((keep, elements));
        }
        DockerIgnore { patterns }
    }

    /// Whether `path` (relative to the context root, `/`-separated) stays out of the context.
    fn excludes(&self, path: &str) -> bool {
        let elements: Vec<&str> = path.split('/').filter(|e| !e.is_empty()).collect();
        let mut excluded = false;
        for (keep, pattern) in &self.patterns {
            // The path itself or one of the folders it is in.
            if (1..=elements.len()).any(|n| path_match(pattern, &elements[..n])) {
                excluded = !keep;
            }
        }
        excluded
    }
}

fn path_match(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|i| path_match(rest, &path[i..]))
        }
        Some((first, rest)) => {
            !path.is_empty()
                && name_match(
                    &first.chars().collect::<Vec<_>>(),
                    &path[0].chars().collect::<Vec<_>>(),
                )
                && path_match(rest, &path[1..])
        }
    }
}

fn name_match(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((&'*', rest)) => (0..=name.len()).any(|i| name_match(rest, &name[i..])),
        Some((&'?', rest)) => !name.is_empty() && name_match(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && name_match(rest, &name[1..]),
    }
}

#[test]
fn the_matcher_follows_dockers_rules() {
    let m = |patterns: &str, path: &str| DockerIgnore::parse(patterns).excludes(path);
    // A name matches from the root only, and everything inside it.
    assert!(m("data", "data"));
    assert!(m("data", "data/sub/key_pool.json"));
    assert!(!m("data", "src/data"));
    assert!(!m("data", "database"));
    // Leading and trailing slashes change nothing.
    assert!(m("data/", "data/x") && m("/data", "data/x") && m("./data", "data/x"));
    // `*` and `?` stay within one element.
    assert!(m("*.db", "x.db"));
    assert!(!m("*.db", "data/x.db"));
    assert!(m("src/*.rs", "src/main.rs"));
    assert!(!m("src/*.rs", "src/a/b.rs"));
    assert!(m("*", "anything/at/all"));
    assert!(m("log?.txt", "log1.txt") && !m("log?.txt", "log10.txt"));
    assert!(m(".env*", ".env") && m(".env*", ".env.local"));
    // `**` spans any number of elements, none included.
    assert!(m("**/*.db", "x.db") && m("**/*.db", "a/b/x.db"));
    assert!(m("**/*.db", "a/x.db/inner"));
    assert!(m("a/**/b", "a/b") && m("a/**/b", "a/x/y/b") && !m("a/**/b", "x/a/b"));
    assert!(m("a/**", "a/x/y") && !m("a/**", "b/a/x"));
    assert!(m("**", "x/y"));
    // The last matching line wins; `!` takes a path back.
    assert!(!m(".env*\n!.env.example", ".env.example"));
    assert!(m(".env*\n!.env.example", ".env.local"));
    assert!(m("!.env.example\n.env*", ".env.example"));
    assert!(!m("data\n!data/keep", "data/keep/x"));
    // Comments and blank lines are no patterns.
    assert!(!m("# data\n\n", "data"));
    assert!(!m("", "anything"));
}

#[test]
fn no_secret_or_data_file_enters_the_build_context() {
    let ignore = DockerIgnore::parse(&read(".dockerignore"));
    let data = |name: &str| format!("data/{name}");
    let out = [
        data(NODE_POOL_FILE),
        data(NODE_POOL_IMPORTED),
        data("auth.json"),
        data(DB_FILE),
        data(&format!("{DB_FILE}-wal")),
        data(&format!("{DB_FILE}-shm")),
        data(INSTANCE_FILE),
        data(LOCK_FILE),
        data("config.json"),
        data("factory_usage.json"),
        "logs/x.log".into(),
        "logs/droid2api.2026-12-06.log".into(),
        ".env".into(),
        ".env.local".into(),
        ".env.production".into(),
        "mock/.env".into(),
        "target/release/droid2api".into(),
        "mock/target/debug/x".into(),
        ".git/config".into(),
        // A Node installation's files copied next to the sources, or a data folder elsewhere.
        NODE_POOL_FILE.into(),
        "auth.json".into(),
        "node/data/key_pool.json".into(),
        "backup/droid2api.db".into(),
        "backup/droid2api.db-wal".into(),
        "fuzz/corpus/x".into(),
    ];
    for path in &out {
        assert!(
            ignore.excludes(path),
            "{path} would enter the build context"
        );
    }
    let kept = [
        ".env.example",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src/main.rs",
        "src/lib.rs",
        "src/store/sqlite.rs",
        "ui/index.html",
        "benches/pool_select.rs",
        "mock/Cargo.toml",
        "bench/Cargo.toml",
        "bench/src/main.rs",
        "Dockerfile",
    ];
    for path in kept {
        assert!(
            !ignore.excludes(path),
            "{path} is left out of the build context"
        );
    }
}

// ---- docker-compose.yml ---------------------------------------------------------------------------

/// The lines of one service block of docker-compose.yml (two-space indented service names).
fn service(compose: &str, name: &str) -> String {
    let mut lines = compose.lines().skip_while(|l| *l != format!("  {name}:"));
    assert!(
        lines.next().is_some(),
        "docker-compose.yml has no service {name}"
    );
    lines
        .take_while(|l| {
            let t = l.trim_start();
            t.is_empty() || t.starts_with('#') || l.len() - t.len() > 2
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn compose_runs_the_image_as_the_dockerfile_says() {
    let compose = read("docker-compose.yml");
    let ins = dockerfile();
    let (_, image) = stages(&ins);
    let port = last(&ins, image, "EXPOSE");
    let volume = last(&ins, image, "VOLUME");

    let gateway = service(&compose, "droid2api");
    assert!(gateway.contains("build: ."));
    assert!(
        gateway.contains(&format!("- \"{port}:{port}\"")),
        "{gateway}"
    );
    assert!(gateway.contains(&format!("- ./data:{volume}")), "{gateway}");
    assert!(gateway.contains("restart: unless-stopped"));
    assert!(gateway.contains("test: [\"CMD\", \"droid2api\", \"health\"]"));
    // `.env` is optional, and REDIS_URL reaches the gateway.
    assert!(gateway.contains("- path: .env\n        required: false"));
    assert!(gateway.contains("REDIS_URL: ${REDIS_URL:-}"));
    // docker stop waits longer than the gateway's own shutdown grace.
    let grace: u64 = gateway
        .lines()
        .find_map(|l| l.trim().strip_prefix("stop_grace_period: "))
        .and_then(|v| v.strip_suffix('s'))
        .expect("stop_grace_period: Ns")
        .parse()
        .unwrap();
    assert!(grace > Timing::default().shutdown_grace_s);

    // Redis only under its profile, password-protected, and reachable from the gateway only.
    let redis = service(&compose, "redis");
    assert!(redis.contains("image: redis:7-alpine"));
    assert!(redis.contains("profiles: [\"redis\"]"));
    assert!(redis.contains("\"--requirepass\", \"${REDIS_PASSWORD:-}\""));
    assert!(!redis.contains("ports:"), "redis publishes no host port");
    // A required variable (`:?`) would stop a plain `docker compose up` without the profile:
    // Compose substitutes every service before it filters by profile.
    assert!(!compose.contains(":?"));
}

// ---- .env.example -----------------------------------------------------------------------------------

fn is_var_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The variables of README's Environment table: the backticked names of its first column
/// (`REASONING_BUDGET_LOW` / `_MEDIUM` stands for `REASONING_BUDGET_MEDIUM`).
fn readme_variables() -> BTreeSet<String> {
    let readme = read("README.md");
    let section = readme
        .split_once("\n### Environment\n")
        .expect("README has an Environment section")
        .1;
    let section = section.split("\n#").next().unwrap();
    let mut vars = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with('|')) {
        let first = row.split('|').nth(1).unwrap();
        let names: Vec<&str> = first.split('`').skip(1).step_by(2).collect();
        for name in &names {
            let name = match name.strip_prefix('_') {
                Some(suffix) => {
                    let (stem, _) = names[0].rsplit_once('_').expect("a stem to extend");
                    format!("{stem}_{suffix}")
                }
                None => name.to_string(),
            };
            assert!(is_var_name(&name), "README Environment: {name:?}");
            vars.insert(name);
        }
    }
    assert!(vars.len() > 20, "README's Environment table: {vars:?}");
    vars
}

/// The assignments of `.env.example`: (name, value, set), where `set` is false for the ones
/// commented out (`# NAME=value`).
fn env_example() -> Vec<(String, String, bool)> {
    let text = read(".env.example");
    let mut out = Vec::new();
    let mut after_comment = false;
    for line in text.lines() {
        let (body, set) = match line.strip_prefix("# ") {
            Some(rest) => (rest, false),
            None => (line, true),
        };
        let assignment = body
            .split_once('=')
            .filter(|(name, _)| is_var_name(name))
            .map(|(n, v)| (n.to_string(), v.to_string()));
        match assignment {
            Some((name, value)) => {
                assert!(
                    !value.contains([' ', '"', '\'', '#']),
                    ".env.example: {line:?}: plain values only (no quotes, spaces or comments)"
                );
                assert!(
                    after_comment,
                    ".env.example: {name} needs a one-line comment above it"
                );
                out.push((name, value, set));
                after_comment = false;
            }
            None => {
                assert!(
                    line.is_empty() || line.starts_with('#'),
                    ".env.example: {line:?} is neither a comment nor NAME=value"
                );
                after_comment = line.starts_with("# ");
            }
        }
    }
    out
}

#[test]
fn env_example_lists_exactly_the_readme_variables() {
    let readme = readme_variables();
    let example = env_example();
    let mut listed = BTreeSet::new();
    for (name, _, _) in &example {
        assert!(
            listed.insert(name.clone()),
            ".env.example lists {name} twice"
        );
    }
    let missing: Vec<_> = readme.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&readme).collect();
    assert!(
        missing.is_empty(),
        "README variables missing from .env.example: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        ".env.example variables not in README's Environment table: {unknown:?}"
    );
    // No secret is set: every key is commented out and empty.
    for secret in [
        "ADMIN_ACCESS_KEY",
        "API_ACCESS_KEY",
        "FACTORY_API_KEY",
        "DROID_REFRESH_KEY",
        "REDIS_PASSWORD",
        "REDIS_URL",
    ] {
        let (_, value, set) = example.iter().find(|(n, _, _)| n == secret).unwrap();
        assert!(
            !set && value.is_empty(),
            ".env.example gives {secret} a value"
        );
    }
}

/// `.env.example` written to `dir/.env`, with its commented-out lines set when `uncomment`.
fn write_env(dir: &Path, uncomment: bool) -> PathBuf {
    let mut text = String::new();
    for line in read(".env.example").lines() {
        let line = match line.strip_prefix("# ") {
            Some(rest)
                if uncomment && rest.split_once('=').is_some_and(|(n, _)| is_var_name(n)) =>
            {
                rest
            }
            _ => line,
        };
        text.push_str(line);
        text.push('\n');
    }
    let path = dir.join(".env");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn env_example_as_it_is_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::layered(&write_env(dir.path(), false), []);
    for (name, value, set) in env_example() {
        if set {
            assert_eq!(
                env.get(&name),
                Some(value.as_str()),
                "{name} read from .env"
            );
        } else {
            assert_eq!(env.get(&name), None, "{name} is commented out");
        }
    }
    let with = Settings::from_sources(&env, None).unwrap();
    let without = Settings::from_sources(&Env::default(), None).unwrap();
    assert_eq!(Redacted(&with).to_string(), Redacted(&without).to_string());
    assert_eq!(with.warnings, without.warnings);
    assert!(with.pinned.is_empty(), "nothing pinned: {:?}", with.pinned);
}

#[test]
fn env_example_values_are_valid_when_uncommented() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::layered(&write_env(dir.path(), true), []);
    let settings = Settings::from_sources(&env, None)
        .unwrap_or_else(|e| panic!(".env.example with every line set: {e}"));
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
}

#[test]
fn check_config_accepts_env_example() {
    for uncomment in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_env(dir.path(), uncomment);
        let out = Command::new(BIN)
            .arg("check-config")
            .env_clear()
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("configuration OK"),
            "check-config with .env.example (uncommented: {uncomment}): {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
