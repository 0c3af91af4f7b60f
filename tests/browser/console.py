"""The admin console in a real browser (Debian's Chromium driven by Playwright; contract §11).

Starts `droid2api-mock` and `droid2api` (paths on the command line) on loopback with a fresh data
folder, opens the console and checks, failing on any console error, page error, native dialog
or request to another origin:

- login with a wrong key (error shown), then the right one by keyboard alone; a visible focus
  ring; the dashboard counts;
- keys: add one with an XSS payload in its notes (shown as text, never run), batch import with
  results, test all to the end, export (the whole keys only in the download), test a key,
  toggle it, delete it through the in-page confirmation;
- per key: move to a group, edit notes, history, reset; pool groups: create one whose name is an
  XSS payload (shown as text), delete it through the in-page confirmation;
- clients: a bad limit shows the API's message beside its field; a client with limits is
  created and its key shown once (gone from the page once the dialog closes); the key works on
  `/v1/chat/completions` and the row's requests today go to 1; a model outside its list is
  refused (403); limits edited; its usage link opens the Usage view filtered by the client;
  rotate (the new key shown once, the old one refused 401), an expiry moved into the past (the
  "expired" badge, the key refused 401), delete (row gone, key refused); the view in Chinese;
- a change without the CSRF token is refused (403 `csrf`), the CSP header is sent;
- the language switch, the other views (the live log shows the start-up lines), logout;
- screenshots of the dashboard (desktop and 360 px), the keys view and the clients view (desktop and
  360 px) into docs/screenshots/.

    python tests/browser/console.py target/debug/droid2api target/debug/droid2api-mock
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from urllib.parse import urlparse

from playwright.sync_api import expect, sync_playwright

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from procs import Proc  # noqa: E402

ADMIN = "browser-test-admin-key-0123456789"
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
SHOTS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "screenshots")


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    raise SystemExit("Chromium is not installed (Debian: apt-get install chromium)")


def main() -> int:
    gateway_bin, mock_bin = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix="droid2api-browser-")
    mock = Proc([mock_bin, "--port", "0", "--host", "127.0.0.1"], dict(os.environ), r"MOCK_LISTENING (\S+)", "mock")
    mock_url = mock.match.group(1)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": work,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "DATA_DIR": os.path.join(work, "data"),
        "ADMIN_ACCESS_KEY": ADMIN,
        "FACTORY_BASE_URL": mock_url,
        "WORKOS_BASE_URL": mock_url,
        "LOG_LEVEL": "info",
    }
    gw = Proc([gateway_bin], env, r"listening addr=(\S+)", "gateway")
    base = "http://" + gw.match.group(1)
    origin = urlparse(base).netloc
    problems: list[str] = []
    exe = chromium_path()
    print("chromium:", subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip())
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
            ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
            page = ctx.new_page()
            page.on("console", lambda m: console_error(m, problems))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("dialog", lambda d: (problems.append(f"native dialog: {d.message}"), d.dismiss()))
            page.on(
                "request",
                lambda r: urlparse(r.url).netloc not in (origin, "")
                and problems.append(f"request to another origin: {r.url}"),
            )
            run(page, base)
            browser.close()
    finally:
        gw.stop()
        mock.stop()
    if problems:
        print("FAIL\n" + "\n".join(problems))
        return 1
    print("PASS console in Chromium")
    return 0


def console_error(m, problems: list[str]):
    """Every console error fails the run (CSP violations land here), except Chromium's own
    report of a 4xx answer the test provokes on purpose (a wrong login, the CSRF refusal)."""
    if m.type != "error":
        return
    if re.match(r"Failed to load resource: the server responded with a status of 40[0-9]", m.text):
        return
    problems.append(f"console error: {m.text}")


def headers_of(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return {k.lower(): v for k, v in r.headers.items()}


def run(page, base: str):
    tid = page.get_by_test_id
    h = headers_of(base, "/")
    assert h["content-security-policy"] == (
        "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'"
    ), h
    assert h["x-content-type-options"] == "nosniff", h

    # Login: a wrong key is refused in the page, the right one opens the dashboard.
    page.goto(base + "/")
    tid("login-key").fill("not-the-admin-key-000000")
    tid("login-submit").click()
    expect(tid("login-error")).to_be_visible()
    # By keyboard alone: type the key, Enter submits.
    tid("login-key").fill("")
    tid("login-key").focus()
    page.keyboard.type(ADMIN)
    page.keyboard.press("Enter")
    expect(tid("stat-total")).to_have_text("0")
    # Tab moves a visible focus ring through the page.
    page.keyboard.press("Tab")
    ring = page.evaluate(
        "() => { const e = document.activeElement; const s = getComputedStyle(e);"
        " return [e.tagName, s.outlineStyle, s.outlineWidth]; }"
    )
    assert ring[0] != "BODY" and ring[1] != "none" and ring[2] != "0px", ring
    assert tid("login-key").count() == 0 or tid("login-key").input_value() == ""
    assert ADMIN not in json.dumps(page.evaluate("() => ({...localStorage, ...sessionStorage})"))

    # Keys: add one whose notes try to inject markup.
    tid("nav-keys").click()
    tid("add-key-input").fill("fk-browser-test-key-000001")
    tid("add-key-notes").fill(XSS)
    tid("add-key-submit").click()
    row = tid("key-row").first
    expect(row).to_be_visible()
    expect(row.get_by_test_id("key-notes")).to_have_text(XSS)
    expect(row.get_by_test_id("key-masked")).not_to_have_text("fk-browser-test-key-000001")
    assert page.evaluate("() => window.__xss") is None, "the notes ran as markup"
    assert page.locator("main img[src='x']").count() == 0

    # Batch import: results with line errors.
    tid("batch-import-text").fill("fk-browser-test-key-000002\nbad key\nfk-browser-test-key-000001\n")
    tid("batch-import-submit").click()
    result = tid("batch-result")
    expect(result).to_contain_text("1")
    expect(tid("key-row")).to_have_count(2)

    # A change without the CSRF token is refused even with the session cookie.
    status = page.evaluate(
        """async () => (await fetch('/admin/keys', {method: 'POST', credentials: 'same-origin',
            headers: {'content-type': 'application/json'},
            body: JSON.stringify({key: 'fk-browser-csrf-key-000003'})})).status"""
    )
    assert status == 403, status

    # Test all: the progress bar fills and the job ends.
    tid("test-all").click()
    progress = tid("test-all-progress")
    expect(progress).to_be_visible()
    page.wait_for_function(
        "() => { const p = document.querySelector('[data-testid=test-all-progress]');"
        " return p && p.max >= 2 && p.value === p.max; }",
        timeout=20000,
    )
    expect(tid("test-all")).to_be_enabled()

    # Export: a download holding the whole keys (the only place they appear).
    with page.expect_download() as dl:
        tid("export-link").click()
    exported = open(dl.value.path(), encoding="utf-8").read()
    assert "fk-browser-test-key-000001" in exported and "fk-browser-test-key-000002" in exported, exported
    assert "fk-browser-test-key-000001" not in page.content(), "a whole key in the page"

    # Per-key actions and pool groups.
    rows_and_groups(page)

    # Client keys (the pool keys above serve their requests).
    clients(page, base)
    tid("nav-keys").click()
    expect(tid("key-row")).to_have_count(2)

    # Test, toggle, delete (in-page confirmation).
    first = tid("key-row").first
    first.get_by_test_id("key-test").click()
    expect(tid("toast")).to_be_visible()
    first.get_by_test_id("key-toggle").click()
    expect(first.get_by_test_id("key-status")).to_contain_text("disabled")
    page.screenshot(path=os.path.join(SHOTS, "keys.png"), full_page=True)
    first.get_by_test_id("key-delete").click()
    tid("confirm-ok").click()
    expect(tid("key-row")).to_have_count(1)

    # Dashboard counts follow; the other views open.
    tid("nav-dashboard").click()
    expect(tid("stat-total")).to_have_text("1")
    page.screenshot(path=os.path.join(SHOTS, "dashboard.png"), full_page=True)
    tid("nav-usage").click()
    expect(tid("heatmap")).to_be_visible()
    tid("nav-settings").click()
    expect(tid("config-form")).to_be_visible()
    tid("nav-logs").click()
    expect(tid("log-lines")).to_contain_text("listening")

    # Language switch, at phone width.
    page.set_viewport_size({"width": 360, "height": 800})
    tid("nav-dashboard").click()
    # The whole dashboard drawn (its pool cards come with the counts) before the screenshot.
    expect(page.locator("main .pool-counts")).to_have_count(1)
    expect(page.locator("main [aria-busy]")).to_have_count(0)
    page.screenshot(path=os.path.join(SHOTS, "dashboard-360.png"), full_page=True)
    before = tid("nav-keys").inner_text()
    tid("lang-toggle").click()
    expect(tid("nav-keys")).not_to_have_text(before)
    assert page.evaluate("() => document.documentElement.lang") == "zh-CN"
    tid("lang-toggle").click()
    expect(tid("nav-keys")).to_have_text(before)

    # Logout ends the session: the login comes back and the cookie is refused.
    tid("logout").click()
    expect(tid("login-key")).to_be_visible()
    status = page.evaluate("async () => (await fetch('/admin/stats', {credentials: 'same-origin'})).status")
    assert status == 401, status


GROUP_XSS = '<b onmouseover="window.__xss=3">grp</b>'


def rows_and_groups(page):
    tid = page.get_by_test_id
    # A group whose name tries to inject markup.
    tid("nav-groups").click()
    tid("group-id-input").fill("team-a")
    tid("group-name-input").fill(GROUP_XSS)
    tid("group-priority-input").fill("10")
    tid("group-create-submit").click()
    row = page.locator("[data-testid=group-row][data-group-id=team-a]")
    expect(row.get_by_test_id("group-name")).to_have_text(GROUP_XSS)
    assert page.locator("main b").count() == 0, "the group name ran as markup"
    # Move the first key into it, edit its notes, read its history, reset it.
    tid("nav-keys").click()
    first = tid("key-row").first
    first.get_by_test_id("key-move").click()
    tid("key-move-group").select_option("team-a")
    tid("key-move-ok").click()
    expect(tid("toast")).to_be_visible()
    first = tid("key-row").first
    first.get_by_test_id("key-edit-notes").click()
    tid("key-notes-input").fill(XSS + " edited")
    tid("key-notes-ok").click()
    expect(tid("key-row").first.get_by_test_id("key-notes")).to_have_text(XSS + " edited")
    tid("key-row").first.get_by_test_id("key-history").click()
    expect(tid("key-history-list")).to_be_visible()
    page.keyboard.press("Escape")
    tid("key-row").first.get_by_test_id("key-reset").click()
    expect(tid("toast")).to_be_visible()
    # The group counts the key; deleting it (confirmed in the page) moves the key back.
    tid("nav-groups").click()
    row = page.locator("[data-testid=group-row][data-group-id=team-a]")
    expect(row).to_contain_text("1")
    row.get_by_test_id("group-delete").click()
    tid("confirm-ok").click()
    expect(page.locator("[data-testid=group-row][data-group-id=team-a]")).to_have_count(0)
    assert page.evaluate("() => window.__xss") is None
    tid("nav-keys").click()
    expect(tid("key-row")).to_have_count(2)


KEY_RE = re.compile(r"d2a-[0-9a-f]{64}")


def chat(base: str, key, model: str = "claude-sonnet-4-6") -> int:
    """POST /v1/chat/completions with `key` as the Bearer (none when None); the status."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hello"}]}).encode()
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = "Bearer " + key
    req = urllib.request.Request(base + "/v1/chat/completions", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def assert_key_gone(page, key: str):
    """The whole key is nowhere in the page: not in its markup, text, any input or storage."""
    where = page.evaluate(
        """(k) => {
            const out = [];
            if (document.documentElement.outerHTML.includes(k)) out.push('markup');
            if (document.body.innerText.includes(k)) out.push('text');
            for (const e of document.querySelectorAll('input, textarea')) if (e.value.includes(k)) out.push('input');
            if (JSON.stringify({...localStorage, ...sessionStorage}).includes(k)) out.push('storage');
            return out;
        }""",
        key,
    )
    assert where == [], f"the whole key is still in the page: {where}"


def show_once(page) -> str:
    """Reads the key of the show-once dialog, copies it, closes the dialog; returns the key."""
    tid = page.get_by_test_id
    expect(tid("client-key-dialog")).to_be_visible()
    expect(tid("client-key-warning")).to_be_visible()
    key = tid("client-key-value").input_value()
    assert KEY_RE.fullmatch(key), key
    tid("client-key-copy").click()
    expect(tid("client-key-copied")).not_to_have_text("")
    tid("client-key-close").click()
    expect(tid("client-key-dialog")).to_have_count(0)
    assert_key_gone(page, key)
    return key


def client_row(page, cid: str):
    return page.locator(f"[data-testid=client-row][data-client-id='{cid}']")


def clients(page, base: str):
    tid = page.get_by_test_id
    tid("nav-clients").click()
    # Empty state and help text.
    expect(tid("clients-empty")).to_be_visible()
    expect(tid("clients-empty")).to_contain_text("/v1/*")
    help_text = tid("clients-help")
    for word in ("rate_limited", "quota_exceeded", "403", "401", "SHA-256"):
        expect(help_text).to_contain_text(word)
    assert chat(base, None) == 200, "no client key yet: /v1/* is open"

    # A bad limit: the API's 400 is shown beside its field and the dialog stays open.
    tid("client-new").click()
    tid("client-name").fill(XSS)
    tid("client-rpm").fill("0")
    tid("client-create-ok").click()
    expect(tid("client-error-rpm")).to_contain_text("rpm: expected a whole number from 1 to")
    expect(tid("client-rpm")).to_have_attribute("aria-invalid", "true")
    expect(tid("client-create-dialog")).to_be_visible()
    assert tid("client-row").count() == 0

    # Corrected: limits and a model list; the key is shown once.
    tid("client-rpm").fill("60")
    tid("client-requests_per_day").fill("1000")
    tid("client-models").fill("claude-sonnet-4-6,\nclaude-opus-4-6")
    tid("client-create-ok").click()
    key = show_once(page)
    expect(tid("client-create-dialog")).to_have_count(0)
    row = tid("client-row")
    expect(row).to_have_count(1)
    cid = row.get_attribute("data-client-id")
    assert cid and cid.startswith("cli_"), cid
    row = client_row(page, cid)
    expect(row.get_by_test_id("client-row-name")).to_have_text(XSS)
    assert page.evaluate("() => window.__xss") is None, "the client name ran as markup"
    expect(row.get_by_test_id("client-masked")).to_contain_text("d2a-")
    expect(row.get_by_test_id("client-limit-rpm")).to_have_text("60")
    expect(row.get_by_test_id("client-limit-models")).to_have_text("claude-sonnet-4-6, claude-opus-4-6")
    expect(row.get_by_test_id("client-today-requests")).to_have_text("0 / 1,000")
    expect(row.get_by_test_id("client-today-tokens")).to_have_text("0 / unlimited")
    expect(row.get_by_test_id("client-last-used")).to_have_text("never")
    expect(row.get_by_test_id("client-expires")).to_have_text("never")
    expect(tid("clients-empty")).to_be_hidden()

    # A second client, with an expiry, keeps /v1/* locked once the first is deleted.
    tid("client-new").click()
    tid("client-name").fill("keeper")
    tid("client-expires_at").fill("2099-01-31T12:00")
    tid("client-create-ok").click()
    keeper_key = show_once(page)
    expect(tid("client-row")).to_have_count(2)
    keeper = page.locator("[data-testid=client-row]", has_text="keeper")
    expect(keeper.get_by_test_id("client-expires")).to_contain_text("2099")
    expect(keeper.get_by_test_id("client-expired")).to_have_count(0)
    assert chat(base, keeper_key) == 200

    # The key works; /v1/* now wants a key; the row counts the request.
    assert chat(base, key) == 200
    assert chat(base, None) == 401
    assert chat(base, key, "gpt-5.4") == 403, "a model outside the client's list"
    tid("clients-refresh").click()
    expect(row.get_by_test_id("client-today-requests")).to_have_text("2 / 1,000")
    expect(row.get_by_test_id("client-today-tokens")).not_to_have_text(re.compile(r"^0 "))
    expect(row.get_by_test_id("client-last-used")).not_to_have_text("never")

    # Edit limits (PATCH): a lower daily quota, the tokens/day limit; a bad value first.
    row.get_by_test_id("client-edit").click()
    tid("client-tokens_per_day").fill("-5")
    tid("client-edit-ok").click()
    expect(tid("client-error-tokens_per_day")).to_contain_text("tokens_per_day:")
    tid("client-requests_per_day").fill("500")
    tid("client-tokens_per_day").fill("100000")
    tid("client-edit-ok").click()
    expect(tid("client-edit-dialog")).to_have_count(0)
    expect(row.get_by_test_id("client-today-requests")).to_have_text("2 / 500")
    expect(row.get_by_test_id("client-today-tokens")).to_contain_text("/ 100,000")
    page.evaluate("() => { document.querySelector('[data-testid=toast]').hidden = true; }")
    page.screenshot(path=os.path.join(SHOTS, "clients.png"), full_page=True)
    page.set_viewport_size({"width": 360, "height": 800})
    page.screenshot(path=os.path.join(SHOTS, "clients-360.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})

    # Its usage link: the Usage view charts that client only.
    with page.expect_request(lambda r: "/admin/usage?" in r.url and f"client={cid}" in r.url):
        row.get_by_test_id("client-usage").click()
    expect(tid("usage-client")).to_have_value(cid)
    expect(tid("usage-client-note")).to_be_visible()
    assert f"client={cid}" in page.evaluate("() => location.hash")
    tid("nav-clients").click()

    # Rotate (confirmed in the page): the new key is shown once; the old one stops at once.
    row.get_by_test_id("client-rotate").click()
    tid("confirm-ok").click()
    new_key = show_once(page)
    assert new_key != key
    assert chat(base, key) == 401, "the old key still works"
    assert chat(base, new_key) == 200
    # Rotation keeps the limits and today's counts.
    tid("clients-refresh").click()
    expect(row.get_by_test_id("client-today-requests")).to_have_text("3 / 500")

    # The view in Chinese, then back.
    before = tid("nav-clients").inner_text()
    tid("lang-toggle").click()
    expect(tid("nav-clients")).to_have_text("客户端")
    expect(tid("clients-help")).to_contain_text("客户端密钥")
    expect(client_row(page, cid).get_by_test_id("client-rotate")).to_have_text("轮换")
    expect(client_row(page, cid).get_by_test_id("client-today-tokens")).to_contain_text("/")
    tid("lang-toggle").click()
    expect(tid("nav-clients")).to_have_text(before)

    # An expiry moved into the past (PATCH allows it): the badge shows and the key is refused.
    keeper.get_by_test_id("client-edit").click()
    tid("client-expires_at").fill("2020-01-01T00:00")
    tid("client-edit-ok").click()
    expect(keeper.get_by_test_id("client-expired")).to_have_text("expired")
    assert chat(base, keeper_key) == 401, "an expired client key still works"

    # Delete (confirmed in the page): the row goes and the key is refused at once.
    row = client_row(page, cid)
    row.get_by_test_id("client-delete").click()
    tid("confirm-ok").click()
    expect(row).to_have_count(0)
    expect(tid("client-row")).to_have_count(1)
    assert chat(base, new_key) == 401, "a deleted client's key still works"
    # The last one: the empty state comes back and /v1/* is open again.
    tid("client-row").first.get_by_test_id("client-delete").click()
    tid("confirm-ok").click()
    expect(tid("clients-empty")).to_be_visible()
    assert chat(base, None) == 200
    assert page.evaluate("() => window.__xss") is None


if __name__ == "__main__":
    os.makedirs(SHOTS, exist_ok=True)
    sys.exit(main())
