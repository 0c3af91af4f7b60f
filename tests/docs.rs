//! README.md and README.zh-CN.md stay in step (issue 12).
//!
//! The Chinese README is the whole English one in Chinese, so the prose differs but the shape
//! does not: the same headings (levels, in order), the same fenced blocks (same languages, in
//! order), the same shell commands (comments may be translated), and a link from the top of each
//! to the other. When README.md grows a section, the failure names the heading that has no
//! counterpart.
//!
//! Headings are paired across the two languages by an alignment of the two outlines: two
//! headings can pair only at the same level, and a pair scores higher the more language-neutral
//! tokens their sections share (inline code spans and shell commands: env var names, endpoint
//! paths, metric names stay as they are in both). A heading left unpaired is the missing or extra
//! one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const EN: &str = "README.md";
const ZH: &str = "README.zh-CN.md";

/// How many lines from the top a file's link to the other language may sit.
const LINK_WITHIN_LINES: usize = 5;

#[derive(Debug)]
struct Heading {
    level: usize,
    text: String,
    line: usize,
    /// Inline code spans of the heading and its section (up to the next heading of any level),
    /// whitespace collapsed: what a translation keeps as is.
    spans: BTreeSet<String>,
    /// The commands of the section's shell blocks, one line each.
    commands: BTreeSet<String>,
}

impl Heading {
    /// The language-neutral tokens of the section, for pairing headings.
    fn tokens(&self) -> BTreeSet<&String> {
        self.spans.iter().chain(&self.commands).collect()
    }
}

#[derive(Debug)]
struct Fence {
    info: String,
    body: String,
    line: usize,
}

#[derive(Debug, Default)]
struct Doc {
    headings: Vec<Heading>,
    fences: Vec<Fence>,
}

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// An ATX heading (`#` to `######`, then a space or the end of the line) → (level, text).
fn heading(line: &str) -> Option<(usize, String)> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let text = rest.trim().trim_end_matches('#').trim_end().to_string();
    Some((level, text))
}

/// A fence opener or closer (up to three spaces of indent, then ``` or ~~~ three or more times)
/// → (marker, run length, info string).
fn fence_marker(line: &str) -> Option<(char, usize, String)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let t = &line[indent..];
    let marker = t.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let run = t.chars().take_while(|c| *c == marker).count();
    if run < 3 {
        return None;
    }
    let info = t[run..].split_whitespace().next().unwrap_or("").to_string();
    Some((marker, run, info))
}

fn is_shell(info: &str) -> bool {
    matches!(info, "bash" | "sh" | "shell")
}

/// The line without its shell comment: a `#` that starts a word outside quotes, to the end.
fn strip_shell_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut word_start = true;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            word_start = false;
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some('"') if c == '\\' => escaped = true,
            Some(_) => {}
            None => match c {
                '\\' => escaped = true,
                '\'' | '"' => quote = Some(c),
                '#' if word_start => return line[..i].trim_end(),
                _ => {}
            },
        }
        word_start = c.is_whitespace();
    }
    line.trim_end()
}

/// A shell block's commands: comments (whole-line and trailing) and blank lines dropped.
fn shell_commands(body: &str) -> String {
    body.lines()
        .map(strip_shell_comment)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The inline code spans of a piece of Markdown text, whitespace collapsed (a span may be
/// wrapped over two lines differently in each language).
fn code_spans(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
}

fn parse(text: &str) -> Doc {
    let mut doc = Doc::default();
    // The open fence: (marker, run, info, first line, body).
    let mut open: Option<(char, usize, String, usize, String)> = None;
    // Prose of the current section (heading text included), for its code spans.
    let mut prose = String::new();

    fn close_section(doc: &mut Doc, prose: &mut String) {
        if let Some(h) = doc.headings.last_mut() {
            h.spans.extend(code_spans(prose));
        }
        prose.clear();
    }

    for (idx, line) in text.lines().enumerate() {
        let n = idx + 1;
        if let Some((marker, run, info, start, mut body)) = open.take() {
            let closes =
                fence_marker(line).is_some_and(|(m, r, i)| m == marker && r >= run && i.is_empty());
            if closes {
                if is_shell(&info) {
                    let commands = shell_commands(&body);
                    if let Some(h) = doc.headings.last_mut() {
                        h.commands.extend(commands.lines().map(str::to_string));
                    }
                }
                doc.fences.push(Fence {
                    info,
                    body,
                    line: start,
                });
            } else {
                body.push_str(line);
                body.push('\n');
                open = Some((marker, run, info, start, body));
            }
            continue;
        }
        if let Some((marker, run, info)) = fence_marker(line) {
            open = Some((marker, run, info, n, String::new()));
            continue;
        }
        if let Some((level, text)) = heading(line) {
            close_section(&mut doc, &mut prose);
            prose.push_str(&text);
            prose.push('\n');
            doc.headings.push(Heading {
                level,
                text,
                line: n,
                spans: BTreeSet::new(),
                commands: BTreeSet::new(),
            });
            continue;
        }
        prose.push_str(line);
        prose.push('\n');
    }
    if let Some((_, _, info, start, _)) = open {
        panic!("a ```{info} fence opened at line {start} is never closed");
    }
    close_section(&mut doc, &mut prose);
    doc
}

fn jaccard_permille(a: &BTreeSet<&String>, b: &BTreeSet<&String>) -> i64 {
    let union = a.union(b).count();
    if union == 0 {
        return 1000;
    }
    let shared = a.intersection(b).count();
    i64::try_from(shared * 1000 / union).unwrap_or(1000)
}

/// One step of the alignment of two outlines.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Pair(usize, usize),
    OnlyLeft(usize),
    OnlyRight(usize),
}

/// Pairs the headings of two documents in order (Needleman–Wunsch, gaps cost nothing): a pair
/// needs the same level and scores 1 plus twice the share of its sections' tokens, so any pair
/// beats two gaps and, between pairings, the one whose sections agree wins.
fn align(left: &[Heading], right: &[Heading]) -> Vec<Step> {
    let (n, m) = (left.len(), right.len());
    let pair = |i: usize, j: usize| -> Option<i64> {
        (left[i].level == right[j].level)
            .then(|| 1000 + 2 * jaccard_permille(&left[i].tokens(), &right[j].tokens()))
    };
    // best[i][j]: the best score aligning left[i..] with right[j..].
    let mut best = vec![vec![0i64; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let mut s = best[i + 1][j].max(best[i][j + 1]);
            if let Some(p) = pair(i, j) {
                s = s.max(p + best[i + 1][j + 1]);
            }
            best[i][j] = s;
        }
    }
    let mut steps = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m {
            if let Some(p) = pair(i, j)
                && best[i][j] == p + best[i + 1][j + 1]
            {
                steps.push(Step::Pair(i, j));
                i += 1;
                j += 1;
                continue;
            }
            if best[i][j] == best[i + 1][j] {
                steps.push(Step::OnlyLeft(i));
                i += 1;
            } else {
                steps.push(Step::OnlyRight(j));
                j += 1;
            }
        } else if i < n {
            steps.push(Step::OnlyLeft(i));
            i += 1;
        } else {
            steps.push(Step::OnlyRight(j));
            j += 1;
        }
    }
    steps
}

fn show(h: &Heading) -> String {
    format!(
        "`{} {}` (level {}, line {})",
        "#".repeat(h.level),
        h.text,
        h.level,
        h.line
    )
}

/// Every heading of one file without a counterpart in the other, each with where it stands.
fn heading_problems(left_name: &str, left: &Doc, right_name: &str, right: &Doc) -> Vec<String> {
    let steps = align(&left.headings, &right.headings);
    let mut problems = Vec::new();
    // The last paired headings, to say where a missing one belongs.
    let mut after: Option<(usize, usize)> = None;
    let mut previous: Option<Step> = None;
    for step in &steps {
        match *step {
            Step::Pair(i, j) => after = Some((i, j)),
            Step::OnlyLeft(i) => {
                let place = match (previous, after) {
                    (Some(Step::OnlyLeft(k)), _) => format!(
                        "right after {}, which is missing too",
                        show(&left.headings[k])
                    ),
                    (_, Some((_, j))) => format!("after {} there", show(&right.headings[j])),
                    (_, None) => "before the first heading there".to_string(),
                };
                problems.push(format!(
                    "heading {} of {left_name} is missing from {right_name} (it belongs {place})",
                    show(&left.headings[i])
                ));
            }
            Step::OnlyRight(j) => {
                let place = match after {
                    Some((i, _)) => format!("after {}", show(&left.headings[i])),
                    None => "before the first heading".to_string(),
                };
                problems.push(format!(
                    "heading {} of {right_name} is extra: {left_name} has no such heading ({place} there)",
                    show(&right.headings[j])
                ));
            }
        }
        previous = Some(*step);
    }
    problems
}

/// Paired sections whose inline code spans differ: a row, a variable or an endpoint added on one
/// side only. Code spans stay as they are in a translation (env var names, JSON fields, paths,
/// metric names, error codes).
fn span_problems(left_name: &str, left: &Doc, right_name: &str, right: &Doc) -> Vec<String> {
    let list = |spans: Vec<&String>| {
        spans
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut problems = Vec::new();
    for step in align(&left.headings, &right.headings) {
        let Step::Pair(i, j) = step else { continue };
        let (l, r) = (&left.headings[i], &right.headings[j]);
        let only_left: Vec<_> = l.spans.difference(&r.spans).collect();
        let only_right: Vec<_> = r.spans.difference(&l.spans).collect();
        if only_left.is_empty() && only_right.is_empty() {
            continue;
        }
        let mut p = format!(
            "section {} of {left_name} and its translation {} of {right_name} differ in code spans:",
            show(l),
            show(r)
        );
        if !only_left.is_empty() {
            p.push_str(&format!("\n  only in {left_name}: {}", list(only_left)));
        }
        if !only_right.is_empty() {
            p.push_str(&format!("\n  only in {right_name}: {}", list(only_right)));
        }
        problems.push(p);
    }
    problems
}

fn outline(name: &str, doc: &Doc) -> String {
    let mut s = format!("{name} ({} headings):\n", doc.headings.len());
    for h in &doc.headings {
        s.push_str(&format!(
            "  {:>4}: {} {}\n",
            h.line,
            "#".repeat(h.level),
            h.text
        ));
    }
    s
}

/// Shell blocks whose commands are in one file and not the other (as a multiset).
fn shell_problems(left_name: &str, left: &Doc, right_name: &str, right: &Doc) -> Vec<String> {
    let mut count: BTreeMap<String, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for f in left.fences.iter().filter(|f| is_shell(&f.info)) {
        count
            .entry(shell_commands(&f.body))
            .or_default()
            .0
            .push(f.line);
    }
    for f in right.fences.iter().filter(|f| is_shell(&f.info)) {
        count
            .entry(shell_commands(&f.body))
            .or_default()
            .1
            .push(f.line);
    }
    let mut problems = Vec::new();
    for (commands, (l, r)) in &count {
        let indented = commands
            .lines()
            .map(|c| format!("      {c}"))
            .collect::<Vec<_>>()
            .join("\n");
        if l.len() > r.len() {
            problems.push(format!(
                "shell block of {left_name} (line {}) has no identical block in {right_name}:\n{indented}",
                l[r.len()]
            ));
        } else if r.len() > l.len() {
            problems.push(format!(
                "shell block of {right_name} (line {}) has no identical block in {left_name}:\n{indented}",
                r[l.len()]
            ));
        }
    }
    problems
}

fn fence_problems(left_name: &str, left: &Doc, right_name: &str, right: &Doc) -> Vec<String> {
    let infos = |d: &Doc| d.fences.iter().map(|f| f.info.clone()).collect::<Vec<_>>();
    let (l, r) = (infos(left), infos(right));
    if l == r {
        return Vec::new();
    }
    let lines = |d: &Doc| {
        d.fences
            .iter()
            .map(|f| format!("{}@{}", f.info, f.line))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![format!(
        "fenced blocks differ (language@line, in order):\n  {left_name}: {}\n  {right_name}: {}",
        lines(left),
        lines(right)
    )]
}

fn link_problem(name: &str, text: &str, target: &str) -> Option<String> {
    let link = format!("]({target})");
    let found = text
        .lines()
        .take(LINK_WITHIN_LINES)
        .any(|l| l.contains(&link));
    (!found).then(|| {
        format!("{name} has no link `[…]({target})` in its first {LINK_WITHIN_LINES} lines")
    })
}

/// Everything that differs between the two READMEs, as messages; empty when they are in step.
fn compare(en_text: &str, zh_text: &str) -> Vec<String> {
    let (en, zh) = (parse(en_text), parse(zh_text));
    let mut problems = Vec::new();
    problems.extend(link_problem(EN, en_text, ZH));
    problems.extend(link_problem(ZH, zh_text, EN));
    let headings = heading_problems(EN, &en, ZH, &zh);
    let headings_differ = !headings.is_empty();
    problems.extend(headings);
    problems.extend(fence_problems(EN, &en, ZH, &zh));
    problems.extend(shell_problems(EN, &en, ZH, &zh));
    if headings_differ {
        problems.push(format!(
            "the two outlines:\n{}{}",
            outline(EN, &en),
            outline(ZH, &zh)
        ));
    }
    problems
}

#[test]
fn readme_translations_are_in_step() {
    let problems = compare(&read(EN), &read(ZH));
    assert!(
        problems.is_empty(),
        "{EN} and {ZH} have drifted apart; update {ZH} (same sections, levels and order, same \
         commands) in the same change:\n\n{}",
        problems.join("\n\n")
    );
}

/// Within each pair of sections, the same inline code spans (names, paths, codes, values): what
/// keeps a section's content in step, not only its heading.
#[test]
fn readme_sections_keep_the_same_code_spans() {
    let (en, zh) = (parse(&read(EN)), parse(&read(ZH)));
    let problems = span_problems(EN, &en, ZH, &zh);
    assert!(
        problems.is_empty(),
        "a section of {EN} and its translation in {ZH} no longer name the same things; carry the \
         change over to {ZH}:\n\n{}",
        problems.join("\n\n")
    );
}

#[test]
fn both_readmes_have_headings_and_shell_blocks() {
    // Guards the parser: a README read as empty would make the comparison pass vacuously.
    for name in [EN, ZH] {
        let doc = parse(&read(name));
        assert!(
            doc.headings.len() >= 5,
            "{name}: only {} headings found",
            doc.headings.len()
        );
        assert_eq!(
            doc.headings[0].level, 1,
            "{name}: the first heading is not the title"
        );
        assert!(
            doc.fences.iter().filter(|f| is_shell(&f.info)).count() >= 2,
            "{name}: fewer than two shell blocks found"
        );
    }
}

// The checker itself, on small documents.

const SMALL_EN: &str = "# Tool\n\n[中文](README.zh-CN.md)\n\nRun `tool`.\n\n```bash\n# start it\ntool --serve   # foreground\n```\n\n## Admin\n\nSet `ADMIN_KEY` and open `/admin`.\n\n## Several instances\n\nGive them the same `REDIS_URL`.\n\n```nginx\n# upstream\nserver {}\n```\n\n## Security\n\n`HOST=127.0.0.1` and `API_KEY`.\n";

const SMALL_ZH: &str = "# Tool\n\n[English](README.md)\n\n运行 `tool`。\n\n```bash\n# 启动\ntool --serve   # 前台运行\n```\n\n## 管理\n\n设置 `ADMIN_KEY`，打开 `/admin`。\n\n## 多实例\n\n使用相同的 `REDIS_URL`。\n\n```nginx\n# 上游\nserver {}\n```\n\n## 安全\n\n`HOST=127.0.0.1` 和 `API_KEY`。\n";

#[test]
fn checker_accepts_a_faithful_translation_with_translated_comments() {
    let problems = compare(SMALL_EN, SMALL_ZH);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn checker_ignores_hashes_inside_fences() {
    let doc = parse(SMALL_EN);
    let titles: Vec<_> = doc
        .headings
        .iter()
        .map(|h| (h.level, h.text.as_str()))
        .collect();
    assert_eq!(
        titles,
        [
            (1, "Tool"),
            (2, "Admin"),
            (2, "Several instances"),
            (2, "Security")
        ]
    );
    assert_eq!(doc.fences.len(), 2);
}

#[test]
fn checker_names_a_section_added_to_the_english_readme() {
    let en = SMALL_EN.replace(
        "## Security",
        "## Coming from the Node version\n\n`PATCH /admin/keys/:id/toggle` without a body.\n\n## Security",
    );
    let problems = compare(&en, SMALL_ZH);
    let text = problems.join("\n");
    assert!(
        text.contains("heading `## Coming from the Node version` (level 2, line 25) of README.md is missing from README.zh-CN.md (it belongs after `## 多实例`"),
        "{text}"
    );
    assert!(
        !text.contains("## Security` (level"),
        "only the new heading is named: {text}"
    );
    assert!(text.contains("the two outlines"), "{text}");
}

#[test]
fn checker_names_a_level_change_and_an_extra_heading() {
    let zh = SMALL_ZH
        .replace("## 安全", "### 安全")
        .replace("## 管理\n", "## 管理\n\n### 额外\n");
    let text = compare(SMALL_EN, &zh).join("\n");
    assert!(
        text.contains("heading `## Security` (level 2, line 25) of README.md is missing"),
        "{text}"
    );
    assert!(
        text.contains("heading `### 安全` (level 3, line 27) of README.zh-CN.md is extra"),
        "{text}"
    );
    assert!(
        text.contains("heading `### 额外` (level 3, line 14) of README.zh-CN.md is extra"),
        "{text}"
    );
}

#[test]
fn checker_requires_identical_commands_and_fences() {
    let zh = SMALL_ZH.replace("tool --serve   # 前台运行", "tool --serve --verbose");
    let text = compare(SMALL_EN, &zh).join("\n");
    assert!(
        text.contains(
            "shell block of README.md (line 7) has no identical block in README.zh-CN.md"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "shell block of README.zh-CN.md (line 7) has no identical block in README.md"
        ),
        "{text}"
    );

    let zh = SMALL_ZH.replace("```nginx", "```text");
    let text = compare(SMALL_EN, &zh).join("\n");
    assert!(text.contains("fenced blocks differ"), "{text}");
}

#[test]
fn checker_names_consecutive_missing_headings_and_changed_code_spans() {
    let en = SMALL_EN.replace("## Security", "## One\n\n## Two\n\n## Security");
    let text = compare(&en, SMALL_ZH).join("\n");
    assert!(text.contains("`## One` (level 2, line 25) of README.md is missing from README.zh-CN.md (it belongs after `## 多实例`"), "{text}");
    assert!(text.contains("`## Two` (level 2, line 27) of README.md is missing from README.zh-CN.md (it belongs right after `## One` (level 2, line 25), which is missing too)"), "{text}");

    let en = SMALL_EN.replace("Set `ADMIN_KEY`", "Set `ADMIN_KEY` (or `ADMIN_KEY_FILE`)");
    let text = span_problems(EN, &parse(&en), ZH, &parse(SMALL_ZH)).join("\n");
    assert!(text.contains("section `## Admin` (level 2, line 12) of README.md and its translation `## 管理` (level 2, line 12) of README.zh-CN.md differ in code spans:\n  only in README.md: `ADMIN_KEY_FILE`"), "{text}");
    assert!(span_problems(EN, &parse(SMALL_EN), ZH, &parse(SMALL_ZH)).is_empty());
}

#[test]
fn checker_requires_the_links_at_the_top() {
    let zh = SMALL_ZH.replace("[English](README.md)\n", "");
    let text = compare(SMALL_EN, &zh).join("\n");
    assert!(
        text.contains("README.zh-CN.md has no link `[…](README.md)`"),
        "{text}"
    );
    let en = SMALL_EN.replace("[中文](README.zh-CN.md)", "Chinese: see the other file");
    let text = compare(&en, SMALL_ZH).join("\n");
    assert!(
        text.contains("README.md has no link `[…](README.zh-CN.md)`"),
        "{text}"
    );
}

#[test]
fn shell_comments_are_stripped_outside_quotes_only() {
    assert_eq!(
        strip_shell_comment("cargo build   # release"),
        "cargo build"
    );
    assert_eq!(strip_shell_comment("# whole line"), "");
    assert_eq!(strip_shell_comment("echo 'a # b' # c"), "echo 'a # b'");
    assert_eq!(
        strip_shell_comment("echo \"x\\\" # y\""),
        "echo \"x\\\" # y\""
    );
    assert_eq!(
        strip_shell_comment("curl http://h/#frag"),
        "curl http://h/#frag"
    );
    assert_eq!(strip_shell_comment("echo a\\ #b"), "echo a\\ #b");
}
