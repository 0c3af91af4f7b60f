//! The console's files (contract §11): embedded in the binary, the shell at `/` revalidated
//! every time, every other file under `/assets/<build>/` cached for good, each with its media
//! type, the CSP and `nosniff`; and static checks over `ui/` that keep the console inert to
//! injected text (no HTML sinks, no inline script or style, no other origin).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use droid2api::ui::{BUILD, FILES, content_type};

const CSP: &str =
    "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'";

#[tokio::test]
async fn the_shell_and_every_asset_are_served_with_their_type_and_cache_rules() {
    let mock = MockUpstream::start().await;
    let gw = gateway(&mock).start().await;
    let c = client();
    let r = c.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["content-security-policy"], CSP);
    assert_eq!(h["x-content-type-options"], "nosniff");
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", *BUILD));
    let shell = r.text().await.unwrap();
    assert!(!shell.contains("{{BUILD}}"), "{shell}");
    assert!(shell.contains(&format!("/assets/{}/", *BUILD)), "{shell}");
    // Revalidation.
    let r = c
        .get(gw.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // Every file, byte for byte as committed.
    assert!(
        FILES.len() >= 3,
        "ui/ holds the shell, a stylesheet and a script at least"
    );
    for (path, bytes) in FILES {
        let url = gw.url(&format!("/assets/{}/{path}", *BUILD));
        let r = c.get(&url).send().await.unwrap();
        if *path == "index.html" {
            assert_eq!(r.status(), 404, "the shell is only served at /");
            continue;
        }
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], content_type(path), "{path}");
        assert_ne!(
            content_type(path),
            "application/octet-stream",
            "{path}: unknown type"
        );
        assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
        assert_eq!(h["content-security-policy"], CSP, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(&r.bytes().await.unwrap()[..], *bytes, "{path}");
        let r = c
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{path}");
    }
    // An old build, an unknown file, a way out of ui/: 404.
    for path in [
        "/assets/000000000000/app.css".to_string(),
        format!("/assets/{}/no-such-file.js", *BUILD),
        format!("/assets/{}/../Cargo.toml", *BUILD),
        format!("/assets/{}/%2e%2e/Cargo.toml", *BUILD),
        format!("/assets/{}/", *BUILD),
    ] {
        let r = c.get(gw.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // Still serving.
    assert_eq!(c.get(gw.url("/health")).send().await.unwrap().status(), 200);
}

fn text_files() -> Vec<(&'static str, &'static str)> {
    FILES
        .iter()
        .filter_map(|(p, b)| std::str::from_utf8(b).ok().map(|s| (*p, s)))
        .collect()
}

#[test]
fn the_console_has_no_html_sinks_inline_code_or_other_origins() {
    for (path, text) in text_files() {
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "cssText",
            "setAttribute('style'",
            "setAttribute(\"style\"",
            "localStorage.setItem('key'",
            "http://",
            "https://",
            "data:",
        ] {
            // The SVG namespace URI is a name, not a request.
            let hits = text
                .match_indices(banned)
                .filter(|(i, _)| !text[*i..].starts_with("http://www.w3.org/2000/svg"))
                .count();
            assert_eq!(hits, 0, "{path} contains {banned:?}");
        }
        if path.ends_with(".html") {
            let lower = text.to_ascii_lowercase();
            assert!(!lower.contains(" style="), "{path}: inline style");
            for at in lower.match_indices("<script").map(|(i, _)| i) {
                let tag_end = at + lower[at..].find('>').unwrap();
                assert!(lower[at..tag_end].contains("src="), "{path}: inline script");
                assert!(
                    lower[tag_end..].starts_with("></script>"),
                    "{path}: script body"
                );
            }
            let attr_on = lower
                .split(|c: char| c.is_whitespace())
                .any(|w| w.starts_with("on") && w.contains('=') && !w.starts_with("one"));
            assert!(!attr_on, "{path}: an on* handler attribute");
        }
    }
}

/// The keys of an i18n dictionary (`'a.b': '…'` entries).
fn dictionary_keys(text: &str) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find('\'') {
        let start = i + off + 1;
        let Some(len) = text[start..].find('\'') else {
            break;
        };
        let end = start + len;
        let word = &text[start..end];
        let is_key = !word.is_empty()
            && word
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
            && text[end + 1..].trim_start().starts_with(':');
        if is_key {
            keys.insert(word.to_string());
        }
        i = end + 1;
        if i >= b.len() {
            break;
        }
    }
    keys
}

#[test]
fn both_languages_have_the_same_strings() {
    let file = |p: &str| {
        let (_, bytes) = FILES.iter().find(|(path, _)| *path == p).unwrap();
        std::str::from_utf8(bytes).unwrap()
    };
    let en = dictionary_keys(file("js/i18n/en.js"));
    let zh = dictionary_keys(file("js/i18n/zh-CN.js"));
    assert!(en.len() > 100, "{} keys found in en.js", en.len());
    let only_en: Vec<_> = en.difference(&zh).collect();
    let only_zh: Vec<_> = zh.difference(&en).collect();
    assert!(
        only_en.is_empty() && only_zh.is_empty(),
        "only in en: {only_en:?}; only in zh-CN: {only_zh:?}"
    );
}

/// Every key a script asks for literally (`t('clients.new')`, `t('usage.tz', {…})`) is in the
/// dictionaries, and every view the navigation links to has its `nav.` label: a missing key
/// would show as the raw key in the page. Keys built at run time (`t('status.' + s)`) are
/// left to the browser test.
#[test]
fn every_string_a_script_asks_for_exists() {
    let file = |p: &str| {
        let (_, bytes) = FILES.iter().find(|(path, _)| *path == p).unwrap();
        std::str::from_utf8(bytes).unwrap()
    };
    let en = dictionary_keys(file("js/i18n/en.js"));
    let mut asked = 0;
    for (path, text) in text_files() {
        if !path.ends_with(".js") || path.starts_with("js/i18n/") {
            continue;
        }
        for (i, _) in text.match_indices("t('") {
            // A call of `t`, not of `…t` (`toast('`, `fmt('`).
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                continue;
            }
            let rest = &text[i + 3..];
            let Some(end) = rest.find('\'') else { continue };
            let after = rest[end + 1..].trim_start();
            if !(after.starts_with(')') || after.starts_with(',')) {
                continue; // built at run time
            }
            asked += 1;
            let key = &rest[..end];
            assert!(
                en.contains(key),
                "{path} asks for {key:?}, which en.js lacks"
            );
        }
    }
    assert!(asked > 100, "only {asked} literal keys found");
    let shell = file("index.html");
    for (i, _) in shell.match_indices("data-route=\"") {
        let rest = &shell[i + 12..];
        let route = &rest[..rest.find('"').unwrap()];
        assert!(en.contains(&format!("nav.{route}")), "nav.{route} missing");
        assert!(
            FILES
                .iter()
                .any(|(p, _)| *p == format!("js/views/{route}.js")),
            "the navigation links to {route}, which has no view"
        );
    }
}
