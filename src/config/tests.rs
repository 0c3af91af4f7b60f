use super::*;
use serde_json::json;

fn settings(env: &[(&str, &str)], file: serde_json::Value) -> Result<Settings, ConfigError> {
    Settings::from_sources(
        &Env::from_pairs(env.iter().copied()),
        Some(parse_value(&file)),
    )
}

fn errors(r: Result<Settings, ConfigError>) -> Vec<String> {
    match r {
        Err(ConfigError::Invalid(e)) => e,
        Err(other) => vec![other.to_string()],
        Ok(_) => vec![],
    }
}

#[test]
fn defaults_without_a_file() {
    let s = Settings::from_sources(&Env::default(), None).unwrap();
    assert_eq!(s.port, 3000);
    assert_eq!(s.host, "0.0.0.0");
    assert_eq!(s.models.len(), 10);
    assert_eq!(s.system_prompt, DEFAULT_SYSTEM_PROMPT);
    assert_eq!(
        s.endpoints.anthropic,
        "https://api.factory.ai/api/llm/a/v1/messages"
    );
    assert_eq!(s.reasoning_budgets, ReasoningBudgets::default());
    assert_eq!(s.key_pool, KeyPoolSettings::default());
    let glm = s.find_model("glm-5").unwrap();
    assert_eq!(glm.provider(), "fireworks");
    assert_eq!(glm.max_output_tokens, 32_768);
    assert_eq!(s.find_model("gpt-5.4").unwrap().provider(), "azure_openai");
}

#[test]
fn bad_reasoning_names_field_and_value() {
    let e = errors(settings(
        &[],
        json!({"models": [
            {"id": "a", "type": "anthropic", "reasoning": "auto"},
            {"id": "b", "type": "openai", "reasoning": "low"},
            {"id": "c", "type": "anthropic", "reasoning": "hgih"}
        ]}),
    ));
    assert_eq!(
        e,
        vec![r#"models[2].reasoning: expected auto|off|low|medium|high, got "hgih""#.to_string()]
    );
}

#[test]
fn every_error_is_collected() {
    let e = errors(settings(
        &[("PORT", "eighty"), ("KEY_POOL_ALGORITHM", "fastest")],
        json!({"models": [{"id": "x", "type": "gemini"}], "key_pool": {"max_attempts": 0}, "timing": {"sse_keepalive_s": "soon"}}),
    ));
    let text = e.join("\n");
    assert!(
        text.contains(r#"models[0].type: expected anthropic|openai|common, got "gemini""#),
        "{text}"
    );
    assert!(
        text.contains("key_pool.max_attempts: expected a whole number from 1 to 20, got 0"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"timing.sse_keepalive_s: expected a whole number from 1 to 31536000, got "soon""#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"PORT: expected a port number 0-65535, got "eighty""#),
        "{text}"
    );
    assert!(text.contains(r#"KEY_POOL_ALGORITHM: expected round-robin|random|least-used|weighted-score|least-token-used|max-remaining, got "fastest""#), "{text}");
}

#[test]
fn sticky_settings_default_validate_and_name_the_field() {
    let s = settings(&[], json!({})).unwrap();
    assert!(s.key_pool.sticky_sessions);
    assert_eq!(s.key_pool.sticky_ttl_s, 3600);
    let s = settings(
        &[],
        json!({"key_pool": {"sticky_sessions": false, "sticky_ttl_s": 604800}}),
    )
    .unwrap();
    assert!(!s.key_pool.sticky_sessions);
    assert_eq!(s.key_pool.sticky_ttl_s, 604_800);
    for (bad, needle) in [
        (
            json!({"sticky_ttl_s": 0}),
            "key_pool.sticky_ttl_s: expected a whole number from 1 to 604800, got 0",
        ),
        (
            json!({"sticky_ttl_s": 604801}),
            "key_pool.sticky_ttl_s: expected a whole number from 1 to 604800, got 604801",
        ),
        (
            json!({"sticky_ttl_s": -1}),
            "key_pool.sticky_ttl_s: expected a whole number from 1 to 604800, got -1",
        ),
        (
            json!({"sticky_sessions": "yes"}),
            r#"key_pool.sticky_sessions: expected true or false, got "yes""#,
        ),
    ] {
        let text = errors(settings(&[], json!({ "key_pool": bad }))).join("\n");
        assert!(text.contains(needle), "{text}");
    }
}

#[test]
fn unknown_fields_are_warnings() {
    let s = settings(&[], json!({"prot": 1, "key_pool": {"algoritm": "random"}, "models": [{"id": "m", "type": "common", "colour": 1}]})).unwrap();
    let w = s.warnings.join("\n");
    assert!(w.contains("prot: unknown field"), "{w}");
    assert!(w.contains("key_pool.algoritm: unknown field"), "{w}");
    assert!(w.contains("models[0].colour: unknown field"), "{w}");
}

#[test]
fn env_wins_over_file_and_tz_loses_to_timezone() {
    let s = settings(
        &[("PORT", "4000"), ("REASONING_BUDGET_HIGH", "30000"), ("TZ", "UTC"), ("KEY_POOL_ALGORITHM", "random")],
        json!({"port": 5000, "reasoning_tokens": {"high": 20000, "low": 2048}, "timezone": "Asia/Shanghai", "key_pool": {"algorithm": "least-used", "max_attempts": 5}}),
    )
    .unwrap();
    assert_eq!(s.port, 4000);
    assert_eq!(s.reasoning_budgets.high, 30000);
    assert_eq!(s.reasoning_budgets.low, 2048);
    assert_eq!(s.timezone.as_deref(), Some("Asia/Shanghai"));
    assert_eq!(s.key_pool.algorithm, "random");
    assert_eq!(s.key_pool.max_attempts, 5);
    assert_eq!(s.pinned, vec!["algorithm"]);
    let s = settings(&[("TZ", "Europe/Paris")], json!({})).unwrap();
    assert_eq!(s.timezone.as_deref(), Some("Europe/Paris"));
}

#[test]
fn file_port_used_when_env_unset() {
    assert_eq!(settings(&[], json!({"port": 5000})).unwrap().port, 5000);
}

#[test]
fn factory_base_url_wins_over_legacy_endpoints() {
    let file = json!({"endpoint": [
        {"name": "anthropic", "base_url": "https://legacy.example/api/llm/a/v1/messages"},
        {"name": "openai", "base_url": "https://legacy.example/api/llm/o/v1/responses"}
    ]});
    let s = settings(&[], file.clone()).unwrap();
    assert_eq!(
        s.endpoints.anthropic,
        "https://legacy.example/api/llm/a/v1/messages"
    );
    assert_eq!(
        s.endpoints.count_tokens,
        "https://legacy.example/api/llm/a/v1/messages/count_tokens"
    );
    assert_eq!(s.endpoints.balance_origin, "https://legacy.example");
    assert_eq!(
        s.endpoints.common,
        "https://api.factory.ai/api/llm/o/v1/chat/completions"
    );
    let s = settings(&[("FACTORY_BASE_URL", "http://127.0.0.1:9/")], file).unwrap();
    assert_eq!(
        s.endpoints.anthropic,
        "http://127.0.0.1:9/api/llm/a/v1/messages"
    );
    assert_eq!(
        s.endpoints.openai,
        "http://127.0.0.1:9/api/llm/o/v1/responses"
    );
}

#[test]
fn redirects_resolve_before_lookup() {
    let s = settings(
        &[],
        json!({"model_redirects": {"sonnet": "claude-sonnet-4-6", "ghost": "nope"}}),
    )
    .unwrap();
    assert_eq!(s.find_model("sonnet").unwrap().id, "claude-sonnet-4-6");
    assert!(s.find_model("ghost").is_none());
    assert!(s.find_model("claude-sonnet-4-6").is_some());
}

#[test]
fn syntax_error_names_the_file() {
    let e =
        parse_config_file(std::path::Path::new("data/config.json"), b"{\"port\": ").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("data/config.json: not valid JSON"),
        "{e}"
    );
}

#[test]
fn empty_env_values_count_as_unset() {
    let s = settings(
        &[("FACTORY_API_KEY", "  "), ("API_ACCESS_KEY", "")],
        json!({}),
    )
    .unwrap();
    assert!(s.factory_api_key.is_none());
    assert!(s.api_access_key.is_none());
}

#[test]
fn loopback_detection() {
    for (host, lo) in [
        ("127.0.0.1", true),
        ("localhost", true),
        ("::1", true),
        ("0.0.0.0", false),
        ("192.168.1.2", false),
    ] {
        let s = settings(&[("HOST", host)], json!({})).unwrap();
        assert_eq!(s.listens_on_loopback(), lo, "{host}");
    }
}

#[test]
fn dotenv_fills_in_but_never_overrides_the_real_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    std::fs::write(&path, "PORT=4100\nFACTORY_API_KEY=fk-from-dotenv-file\n# comment\nAPI_ACCESS_KEY=\"quoted key\"\n").unwrap();
    let env = Env::layered(&path, [("PORT".to_string(), "4200".to_string())]);
    assert_eq!(env.get("PORT"), Some("4200"));
    assert_eq!(env.get("FACTORY_API_KEY"), Some("fk-from-dotenv-file"));
    assert_eq!(env.get("API_ACCESS_KEY"), Some("quoted key"));
    let missing = Env::layered(&dir.path().join("absent"), []);
    assert_eq!(missing.get("PORT"), None);
}

#[test]
fn stored_admin_layer_sits_between_env_and_config_json() {
    let s = settings(
        &[("KEY_POOL_ALGORITHM", "random")],
        json!({"key_pool": {"max_attempts": 5, "failure_threshold": 7}}),
    )
    .unwrap();
    let stored: BTreeMap<String, serde_json::Value> = [
        ("algorithm".to_string(), json!("least-used")),
        ("max_attempts".to_string(), json!(2)),
        ("bogus".to_string(), json!(1)),
    ]
    .into_iter()
    .collect();
    let (kp, findings) = s.key_pool_with(&stored);
    assert_eq!(kp.algorithm, "random", "env wins over the stored layer");
    assert_eq!(kp.max_attempts, 2, "stored wins over config.json");
    assert_eq!(kp.failure_threshold, 7, "config.json wins over defaults");
    assert!(findings.warnings.iter().any(|w| w.contains("bogus")));
    let (kp, _) = s.key_pool_with(&BTreeMap::new());
    assert_eq!(kp.max_attempts, 5);
}

#[test]
fn time_zones_are_validated() {
    let e = errors(settings(&[], json!({"timezone": "Mars/Olympus"})));
    assert_eq!(e, vec![r#"timezone: unknown time zone "Mars/Olympus" (expected an IANA name such as "Asia/Shanghai")"#.to_string()]);
    let s = settings(&[("TZ", "Not/AZone")], json!({})).unwrap();
    assert!(s.timezone.is_none());
    assert!(s.warnings.iter().any(|w| w.starts_with("TZ:")));
    let s = settings(&[("TZ", ":Europe/Paris")], json!({})).unwrap();
    assert_eq!(s.time_zone().iana_name(), Some("Europe/Paris"));
    let s = settings(&[("TZ", "UTC")], json!({"timezone": "Asia/Shanghai"})).unwrap();
    assert_eq!(s.time_zone().iana_name(), Some("Asia/Shanghai"));
}

#[test]
fn exposure_defaults() {
    let s = Settings::from_sources(&Env::default(), None).unwrap();
    assert_eq!(s.timing.header_read_timeout_s, 10);
    assert_eq!(s.timing.body_read_timeout_s, 60);
    assert_eq!(s.timing.idle_keepalive_s, 75);
    assert_eq!(s.limits.max_connections, 10_000);
    assert_eq!(s.limits.max_inflight_body_mb, 1024);
    assert_eq!(s.limits.max_inflight_body_bytes(), 1 << 30);
    assert_eq!(s.limits.max_json_values, 100_000);
    assert_eq!(s.cors_origins, None);
    assert!(!s.trust_proxy);
    assert!(s.admin_access_key.is_none() && s.admin_key_disabled.is_none());
}

#[test]
fn exposure_settings_from_the_file_and_env() {
    let s = settings(
        &[],
        json!({
            "timing": {"header_read_timeout_s": 2, "body_read_timeout_s": 3, "idle_keepalive_s": 4},
            "limits": {"max_connections": 2, "max_inflight_body_mb": 1, "max_json_values": 5000},
            "cors_origins": ["https://App.Example/", "http://localhost:5173", "https://app.example"],
            "trust_proxy": true
        }),
    )
    .unwrap();
    assert_eq!(
        (
            s.timing.header_read_timeout_s,
            s.timing.body_read_timeout_s,
            s.timing.idle_keepalive_s
        ),
        (2, 3, 4)
    );
    assert_eq!(s.limits.max_connections, 2);
    assert_eq!(s.limits.max_inflight_body_mb, 1);
    assert_eq!(s.limits.max_json_values, 5000);
    assert_eq!(
        s.cors_origins,
        Some(vec![
            "https://app.example".to_string(),
            "http://localhost:5173".to_string()
        ])
    );
    assert!(s.trust_proxy);
    assert!(
        s.warnings.is_empty(),
        "limits is a known field now: {:?}",
        s.warnings
    );

    // Env wins over the file.
    let s = settings(
        &[
            ("CORS_ORIGINS", " https://a.example , *,"),
            ("TRUST_PROXY", "0"),
        ],
        json!({"cors_origins": ["https://b.example"], "trust_proxy": true}),
    )
    .unwrap();
    assert_eq!(
        s.cors_origins,
        Some(vec!["https://a.example".to_string(), "*".to_string()])
    );
    assert!(!s.trust_proxy);
    let s = settings(&[("TRUST_PROXY", "1")], json!({})).unwrap();
    assert!(s.trust_proxy);
    let s = settings(&[], json!({"cors_origins": []})).unwrap();
    assert_eq!(s.cors_origins, Some(vec![]));
}

#[test]
fn exposure_errors_name_the_field_and_value() {
    let e = errors(settings(
        &[
            ("TRUST_PROXY", "maybe"),
            ("CORS_ORIGINS", "https://ok.example,evil"),
        ],
        json!({
            "timing": {"header_read_timeout_s": 0, "idle_keepalive_s": "long"},
            "limits": {"max_connections": 0, "max_inflight_body_mb": -1, "max_bodies": 3},
            "trust_proxy": "yes"
        }),
    ));
    let text = e.join("\n");
    for needle in [
        "timing.header_read_timeout_s: expected a whole number from 1 to 31536000, got 0",
        r#"timing.idle_keepalive_s: expected a whole number from 1 to 31536000, got "long""#,
        "limits.max_connections: expected a whole number from 1 to 1000000, got 0",
        "limits.max_inflight_body_mb: expected a whole number from 1 to 1048576, got -1",
        r#"trust_proxy: expected true or false, got "yes""#,
        r#"TRUST_PROXY: expected 1 or 0, got "maybe""#,
        r#"CORS_ORIGINS[1]: expected an origin such as "https://app.example.com" or "*", got "evil""#,
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let e = errors(settings(
        &[],
        json!({"cors_origins": ["https://a.example/path", 7, "null"]}),
    ));
    let text = e.join("\n");
    assert!(text.contains(r#"cors_origins[0]: expected an origin such as "https://app.example.com" or "*", got "https://a.example/path""#), "{text}");
    assert!(
        text.contains("cors_origins[1]: expected an origin string, got 7"),
        "{text}"
    );
    assert!(
        text.contains(r#"cors_origins[2]: expected an origin"#),
        "{text}"
    );
    let e = errors(settings(&[], json!({"cors_origins": "*"})));
    assert_eq!(
        e,
        vec!["cors_origins: expected an array of origins, got a string".to_string()]
    );
    let s = settings(&[], json!({"limits": {"max_bodies": 3}})).unwrap();
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("limits.max_bodies: unknown field")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn max_json_values_is_validated_by_name() {
    let s = settings(&[], json!({"limits": {"max_json_values": 1000}})).unwrap();
    assert_eq!(s.limits.max_json_values, 1000);
    // The other limits keep their defaults.
    assert_eq!(s.limits.max_connections, 10_000);
    let s = settings(&[], json!({"limits": {"max_json_values": 100_000_000}})).unwrap();
    assert_eq!(s.limits.max_json_values, 100_000_000);
    for (bad, shown) in [
        (json!(999), "999"),
        (json!(100_000_001), "100000001"),
        (json!(-5), "-5"),
        (json!(2.5), "2.5"),
        (json!("200000"), r#""200000""#),
        (json!(true), "true"),
    ] {
        let e = errors(settings(&[], json!({"limits": {"max_json_values": bad}})));
        assert_eq!(
            e,
            vec![format!(
                "limits.max_json_values: expected a whole number from 1000 to 100000000, got {shown}"
            )]
        );
    }
    // null = the default.
    let s = settings(&[], json!({"limits": {"max_json_values": null}})).unwrap();
    assert_eq!(s.limits.max_json_values, 100_000);
    // check-config shows it.
    let s = settings(&[], json!({"limits": {"max_json_values": 4321}})).unwrap();
    assert!(
        Redacted(&s)
            .to_string()
            .contains("4321 JSON values per request"),
        "check-config output names the limit"
    );
}

#[test]
fn origins_are_normalized() {
    for (input, want) in [
        ("*", Some("*")),
        ("https://App.Example.com/", Some("https://app.example.com")),
        ("http://localhost:5173", Some("http://localhost:5173")),
        ("http://[::1]:8080", Some("http://[::1]:8080")),
        ("tauri://localhost", Some("tauri://localhost")),
        ("app.example.com", None),
        ("https://", None),
        ("https://a.example/x", None),
        ("https://a.example?x", None),
        ("https://user@a.example", None),
        ("https://a.example:99999", None),
        ("https://a.example:", None),
        ("null", None),
        ("", None),
    ] {
        assert_eq!(normalize_origin(input).as_deref(), want, "{input:?}");
    }
}

#[test]
fn weak_admin_keys_disable_the_admin_api() {
    for weak in [
        "admin",
        "ADMIN",
        "changeme",
        "Your-Admin-Key-Here",
        "your-admin-password-change-me",
        "YOUR-SECURE-ADMIN-PASSWORD",
        "123456",
        "password",
        "fifteen-chars-x",
    ] {
        let s = settings(&[("ADMIN_ACCESS_KEY", weak)], json!({})).unwrap();
        assert!(s.admin_access_key.is_none(), "{weak}");
        let reason = s.admin_key_disabled.clone().unwrap();
        assert!(reason.contains("admin API is disabled"), "{reason}");
        if !weak.eq_ignore_ascii_case("admin") {
            assert!(
                !reason.to_lowercase().contains(&weak.to_lowercase()),
                "the reason never repeats the key: {reason}"
            );
        }
        let shown = Redacted(&s).to_string();
        assert!(shown.contains("(refused)"), "{shown}");
    }
    assert!(
        admin_key_weakness("fifteen-chars-x")
            .unwrap()
            .contains("shorter than 16 characters")
    );
    assert!(
        admin_key_weakness("Your-Admin-Key-Here")
            .unwrap()
            .contains("placeholder")
    );
    // 16 characters (multi-byte ones count once) is enough.
    for ok in ["sixteen-chars-ok", "ключ-админа-16си"] {
        assert_eq!(ok.chars().count(), 16);
        let s = settings(&[("ADMIN_ACCESS_KEY", ok)], json!({})).unwrap();
        assert!(s.admin_access_key.is_some(), "{ok}");
        assert!(s.admin_key_disabled.is_none());
    }
}

#[test]
fn check_config_shows_the_exposure_settings() {
    let s = settings(
        &[("CORS_ORIGINS", "https://a.example")],
        json!({"limits": {"max_connections": 7}}),
    )
    .unwrap();
    let shown = Redacted(&s).to_string();
    assert!(shown.contains("header_read_timeout_s: 10"), "{shown}");
    assert!(shown.contains("7 connections, 1024 MiB"), "{shown}");
    assert!(
        shown.contains("cors origins:        https://a.example"),
        "{shown}"
    );
    assert!(shown.contains("trust proxy:         no"), "{shown}");
}

#[test]
fn debug_output_masks_proxy_and_redis_credentials() {
    let env = Env::from_pairs([
        ("HTTPS_PROXY", "http://bob:hunter2secret@proxy.local:8080"),
        ("REDIS_URL", "redis://:redispassword123@127.0.0.1:6379/2"),
    ]);
    let s = Settings::from_sources(&env, None).unwrap();
    let shown = format!("{s:?}");
    assert!(!shown.contains("hunter2secret"), "{shown}");
    assert!(!shown.contains("redispassword123"), "{shown}");
    assert!(shown.contains("***@proxy.local:8080"), "{shown}");
}

#[test]
fn redis_settings_build_one_url_with_the_password_escaped() {
    let s = settings(
        &[
            ("REDIS_HOST", "10.0.0.5"),
            ("REDIS_PORT", "6380"),
            ("REDIS_PASSWORD", "p@ss:w/rd"),
            ("REDIS_DB", "3"),
        ],
        json!({}),
    )
    .unwrap();
    assert_eq!(
        s.redis_url.as_ref().map(|u| u.expose().to_string()),
        Some("redis://:p%40ss%3Aw%2Frd@10.0.0.5:6380/3".to_string())
    );
    let url = s.redis_url.unwrap();
    let info = redis::Client::open(url.expose()).unwrap();
    let info = info.get_connection_info();
    assert_eq!(info.redis_settings().password(), Some("p@ss:w/rd"));
    assert_eq!(info.redis_settings().db(), 3);
}

#[test]
fn a_bad_redis_url_stops_start_up_without_showing_the_password() {
    for (url, want) in [
        ("http://:topsecret99@host:6379", "is not a Redis URL"),
        (
            "redis://:topsecret99@host:6379/two",
            "database \"two\" is not a number",
        ),
        ("redis://:topsecret99@/0", "expected redis://"),
    ] {
        let e = errors(settings(&[("REDIS_URL", url)], json!({}))).join("\n");
        assert!(e.contains(want), "{url}: {e}");
        assert!(!e.contains("topsecret99"), "{url}: {e}");
    }
    assert!(
        errors(settings(
            &[("REDIS_URL", "rediss://u:pw@h:6380/1")],
            json!({})
        ))
        .is_empty()
    );
    assert!(
        errors(settings(
            &[("REDIS_URL", "unix:///run/redis.sock")],
            json!({})
        ))
        .is_empty()
    );
}

#[test]
fn cluster_mode_from_the_seed_is_accepted_with_a_note() {
    let s = settings(
        &[
            ("CLUSTER_MODE", "true"),
            ("CLUSTER_WORKERS", "4"),
            ("TOKIO_WORKER_THREADS", "6"),
        ],
        json!({}),
    )
    .unwrap();
    let notes = s.notes.join("\n");
    assert!(
        notes.contains("one droid2api process already serves on every core (6 worker threads"),
        "{notes}"
    );
    assert!(notes.contains("REDIS_URL"), "{notes}");
    assert!(settings(&[], json!({})).unwrap().notes.is_empty());
}
