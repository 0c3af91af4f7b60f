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
- a change without the CSRF token is refused (403 `csrf`), the CSP header is sent;
- the language switch, the other views (the live log shows the start-up lines), logout;
- screenshots of the dashboard and the keys view (desktop and 360 px) into docs/screenshots/.

    python tests/browser/console.py target/debug/droid2api target/debug/droid2api-mock
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
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


if __name__ == "__main__":
    os.makedirs(SHOTS, exist_ok=True)
    sys.exit(main())
