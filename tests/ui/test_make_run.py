"""A newcomer's first minutes: `make run`'s own command serves a styled site whose every shown command works.

The server is `scripts/run-embedded.sh`, exactly what `make run` runs after installing the virtualenv, with a free
PORT and its own var/ and gateway ports; nothing wraps it. The checks: static files and the API docs' assets answer
200, a 404 is the site's own page, the node command from the provider's page enrolls a second agent when run as
shown, and headless Chromium walks the demo (faucet and wallet buttons, profile, a rental followed live to its end)
while saving screenshots of the home, market, rental and docs pages under docs/screenshots/.
"""

import csv
import html
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from pypdf import PdfReader

ROOT = Path(__file__).resolve().parent.parent.parent
# Screenshots go to docs/screenshots/ (committed) only when JANCTION_SCREENSHOTS=1; otherwise to a temporary
# directory, so that a CI run or a developer's `make test` leaves the working tree clean. See docs/testing.md.
SCREENSHOTS_ENV = "JANCTION_SCREENSHOTS"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
STARTUP_SECONDS = 360  # a loaded CI machine (2 cores) needs minutes for migrate, collectstatic and seed

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    tail = "" if log is None else "\n" + log.read_text(errors="replace")[-4000:]
    raise AssertionError(f"timed out waiting for {what}{tail}")


class Browserless:
    """A cookie-keeping HTTP client for the site (urllib only), with allauth's log-in."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> tuple[int, str, dict]:
        try:
            with self.opener.open(self.base + path, timeout=10) as response:
                return response.status, response.read().decode(errors="replace"), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace"), dict(error.headers)

    def post(self, path: str, fields: dict) -> tuple[int, str]:
        csrf = next(cookie.value for cookie in self.jar if cookie.name == "csrftoken")
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": csrf}).encode()
        request = urllib.request.Request(self.base + path, data=data, headers={"Referer": self.base + path})  # noqa: S310
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def log_in(self, email: str, password: str) -> None:
        self.get("/accounts/login/")
        status, body = self.post("/accounts/login/", {"login": email, "password": password})
        assert status == 200 and "Sign out" in body, body[:2000]


def assets(page_html: str) -> list[str]:
    """Return the local stylesheets and scripts a page references."""
    return re.findall(r'<(?:link[^>]+href|script[^>]+src)="(/static/[^"]+)"', page_html)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where this run saves its screenshots: docs/screenshots/ with JANCTION_SCREENSHOTS=1, else a temporary dir."""
    if os.environ.get(SCREENSHOTS_ENV) == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Start scripts/run-embedded.sh (what `make run` runs) on free ports and yield its address and passwords."""
    tmp = tmp_path_factory.mktemp("make-run")
    home = tmp / "home"
    home.mkdir()
    web, enroll, connect, ingress, tunnels = free_port(), free_port(), free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(
        PORT=str(web),
        PY=sys.executable,
        HOME=str(home),  # the node command's ~/.janction-agent lands here
        JANCTION_VAR_DIR=str(tmp / "var"),
        AGENT_GATEWAY_ENROLL_LISTEN=f"127.0.0.1:{enroll}",
        AGENT_GATEWAY_PUBLIC_ADDRESS=f"127.0.0.1:{enroll}",
        AGENT_GATEWAY_LISTEN=f"127.0.0.1:{connect}",
        SERVICE_INGRESS_LISTEN=f"127.0.0.1:{ingress}",
        SERVICE_INGRESS_TUNNEL_LISTEN=f"127.0.0.1:{tunnels}",
    )
    log = tmp / "run.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            ["bash", "scripts/run-embedded.sh"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{web}"
    try:
        wait_for(lambda: "Stop       Ctrl-C" in log.read_text(errors="replace"), STARTUP_SECONDS, "make run", log)
        wait_for(lambda: Browserless(base).get("/")[0] == 200, 30, "the home page", log)
        printed = log.read_text(errors="replace")
        passwords = dict(re.findall(r"^\s+(\S+@janction\.localhost)\s+(\S+)$", printed, re.MULTILINE))
        yield {"base": base, "passwords": passwords, "log": log, "env": env, "home": home, "var": tmp / "var"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_make_run_prints_what_to_open_and_serves_static_files_as_production(site):
    printed = site["log"].read_text(errors="replace")
    assert f"Open       {site['base']}/" in printed
    assert "Try next" in printed and "Add 100 demo USDC" in printed
    assert set(site["passwords"]) == {
        "admin@janction.localhost",
        "buyer@janction.localhost",
        "provider@janction.localhost",
    }
    client = Browserless(site["base"])
    status, home, _ = client.get("/")
    assert status == 200 and "Embedded demo mode" in home
    status, docs, _ = client.get("/api/docs/")
    assert status == 200
    docs_assets = assets(docs)
    assert any(path.endswith(".js") for path in docs_assets), docs
    for path in assets(home) + docs_assets + ["/static/js/rental-live.js", "/static/admin/css/base.css"]:
        status, body, _ = client.get(path)
        assert status == 200, path
        assert body, path
    # The pages name hashed copies (collectstatic's manifest), which WhiteNoise may let browsers cache for good.
    stylesheet = next(path for path in assets(home) if path.endswith(".css"))
    assert re.search(r"janction\.[0-9a-f]{12}\.css$", stylesheet)
    assert "immutable" in client.get(stylesheet)[2].get("Cache-Control", "")
    status, schema, _ = client.get("/api/schema/")
    assert status == 200 and "openapi" in schema


def test_errors_are_the_sites_own_pages_without_debug_details(site):
    client = Browserless(site["base"])
    status, body, _ = client.get("/no-such-page/")
    assert status == 404
    assert "Page not found" in body and "/no-such-page/" in body
    assert "URLconf" not in body and "api/v1/" not in body  # no URL pattern listing: DEBUG is off
    assert re.search(r'href="/static/css/janction\.[0-9a-f]{12}\.css"', body)
    # A 10 MB form post is refused with the site's 413 page, not a traceback with the settings.
    client.get("/accounts/login/")
    status, body = client.post("/accounts/login/", {"login": "x" * (10 * 1024 * 1024), "password": "y"})
    assert status == 413
    assert "Request too large" in body and "/static/" in body and "Traceback" not in body and "SECRET_KEY" not in body


def test_the_node_command_from_the_providers_page_enrolls_a_second_agent(site):
    client = Browserless(site["base"])
    client.log_in("provider@janction.localhost", site["passwords"]["provider@janction.localhost"])
    client.get("/nodes/")
    status, page = client.post("/nodes/", {"name": "second-rig"})
    assert status == 200, page[:2000]
    command = html.unescape(re.search(r'<code id="agent-command">(.*?)</code>', page, re.S).group(1))
    assert "--ca-fingerprint sha256:" in command
    assert "--ca-cert" not in command  # the pin is enough: no file to fetch first

    log = site["var"] / "second-agent.log"
    with open(log, "wb") as output:
        agent = subprocess.Popen(
            ["bash", "-c", command],  # exactly as shown, from the checkout the page says to run it in
            cwd=ROOT,
            env=site["env"],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def second_node_online():
            _, body, _ = client.get("/nodes/")
            node = re.search(r'<section class="card node" id="node-\d+">\s*<h2>second-rig <span[^>]*>(\w+)', body)
            return node is not None and node.group(1) == "Online"

        wait_for(second_node_online, 60, "the second agent to enroll and come online", log)
        assert agent.poll() is None, log.read_text()
        assert list(site["home"].glob(".janction-agent/node-*/node.crt")), "the agent kept no certificate"
    finally:
        os.killpg(agent.pid, signal.SIGTERM)
        agent.wait(timeout=30)


def readme_api_loop() -> str:
    """Return the README's "same loop through the API" shell block."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("The same loop through the API")
    return re.search(r"```bash\n(.*?)```", readme[start:], re.S).group(1)


def test_the_readme_api_loop_runs_as_written(site):
    client = Browserless(site["base"])
    client.log_in("buyer@janction.localhost", site["passwords"]["buyer@janction.localhost"])
    client.get("/settings/api-keys/")
    _, page = client.post("/settings/api-keys/", {"name": "readme"})
    key = html.unescape(re.search(r'<code id="new-key-value">(.*?)</code>', page).group(1))
    script = readme_api_loop()
    # The two lines a reader edits: the address `make run` printed and their key. The rest runs verbatim.
    script, edits = re.subn(r"^SITE=\S+", f"SITE={site['base']}", script, flags=re.M)
    script, more = re.subn(r"^KEY=\S+", f"KEY={key}", script, flags=re.M)
    assert edits == more == 1
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script], env=site["env"], capture_output=True, text=True, timeout=150
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"demo":true' in result.stdout.replace(" ", "")
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"rental \d+", next(line for line in lines if line.startswith("rental ")))
    assert "completed" in lines
    assert "hello" in lines[-1]  # the logs


def test_a_wrong_pin_is_refused_in_one_sentence_that_says_what_to_do(site):
    enroll = site["env"]["AGENT_GATEWAY_PUBLIC_ADDRESS"]
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--gateway", enroll, "--ca-fingerprint", "sha256:" + "ab" * 32,
         "--enroll-token", "jne_not-a-real-token", "--state-dir", str(site["home"] / "wrong-pin"),
         "--fake-gpus", "RTX 4090:1", "--runtime", "sandbox"],
        cwd=ROOT, env=site["env"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: the gateway at") and "copy the command again from the provider page" in error
    assert not (site["home"] / "wrong-pin" / "node.crt").exists()
    # Without any trust at all (no pin, no CA), the failure says to run the command as the page shows it.
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--gateway", enroll, "--enroll-token", "jne_not-a-real-token",
         "--state-dir", str(site["home"] / "no-pin"), "--fake-gpus", "RTX 4090:1", "--runtime", "sandbox"],
        cwd=ROOT, env=site["env"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert "TLS verification failed" in error and "--ca-fingerprint" in error, result.stderr


def test_a_newcomer_walks_the_demo_in_chromium_and_every_page_is_styled(site, browser, screenshots):
    from playwright.sync_api import expect

    context = browser.new_context(base_url=site["base"], viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    failed = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("pageerror", lambda error: failed.append(f"script error: {error}"))
    styled = "getComputedStyle(document.querySelector('.topbar')).display"
    try:
        page.goto("/")
        assert page.evaluate(styled) == "flex"  # the stylesheet applied
        page.screenshot(path=str(screenshots / "home.png"), full_page=True)

        page.goto("/api/docs/")
        expect(page.locator(".swagger-ui .opblock").first).to_be_visible()  # Swagger UI's script ran
        page.screenshot(path=str(screenshots / "api-docs.png"))

        page.goto("/accounts/login/")
        page.fill("input[name=login]", "buyer@janction.localhost")
        page.fill("input[name=password]", site["passwords"]["buyer@janction.localhost"])
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard/")
        expect(page.locator("#greeting")).to_have_text("Hello, Demo buyer")

        page.click("nav >> text=Profile")
        page.fill("input[name=display_name]", "Ada")
        page.select_option("select[name=region]", "na")
        page.uncheck("input[name=is_buyer]")
        page.uncheck("input[name=is_provider]")
        page.click("#profile-form button[type=submit]")
        expect(page.locator(".form-error")).to_contain_text("Keep at least one role")
        page.check("input[name=is_buyer]")
        page.click("#profile-form button[type=submit]")
        expect(page.locator(".messages")).to_contain_text("Your profile is saved")
        page.click("nav >> text=Dashboard")
        expect(page.locator("#greeting")).to_have_text("Hello, Ada")

        expect(page.locator("#demo-actions .badge.demo")).to_have_text("DEMO")
        page.click("#demo-faucet")
        expect(page.locator(".messages")).to_contain_text("Credited 100 demo USDC")
        newest = page.locator("#entries tbody tr").first
        expect(newest).to_contain_text("Demo faucet (not real money)")
        expect(newest.locator("td").last).to_have_text("100")
        page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)

        page.click("nav >> text=Wallets")
        page.click("#demo-wallet-link")
        expect(page.locator(".messages")).to_contain_text("Linked demo wallet 0x")
        expect(page.locator("#wallets code")).to_have_count(1)

        page.click("nav >> text=Rentals")
        page.select_option("select[name=pool]", "ada-12g")
        page.fill("input[name=max_price]", "1.00")
        page.fill("input[name=max_duration_minutes]", "10")
        page.fill("input[name=image]", "docker.io/library/busybox:latest")
        page.fill("input[name=command]", "sh -c 'echo hello from the demo; sleep 3'")
        page.click("#rent-submit")
        page.wait_for_url("**/rentals/*/")
        expect(page.locator(".messages")).to_contain_text("is submitted")
        expect(page.locator("#no-placements")).to_be_visible()
        page.evaluate("window.notReloaded = true")
        # A round places it (every 10 s), the demo agent runs it, metering ends it: all without a reload.
        expect(page.locator("#rental-state")).to_have_text("Completed", timeout=90_000)
        expect(page.locator("#placements")).to_contain_text("demo-node (fake GPUs)", timeout=20_000)
        expect(page.locator("#placements .badge.fake")).to_have_text("FAKE GPUs")
        expect(page.locator(".messages")).to_have_count(0)  # the stale "submitted" banner is gone
        expect(page.locator("#events")).to_contain_text("completed")
        expect(page.locator("#rental-log")).to_contain_text("hello from the demo")
        expect(page.locator("#cancel-button")).to_have_count(0)
        assert page.evaluate("window.notReloaded") is True
        assert page.evaluate(styled) == "flex"
        page.screenshot(path=str(screenshots / "rental.png"), full_page=True)

        page.click("nav >> text=Market")  # now with the round that placed the rental
        expect(page.locator("#rounds, table").last).to_contain_text("ada-12g")
        assert page.evaluate(styled) == "flex"
        page.screenshot(path=str(screenshots / "market.png"), full_page=True)
    finally:
        context.close()
    expected = [f"400 {site['base']}/settings/profile/"]  # the profile form refused without a role, on purpose
    assert failed == expected, failed


AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
WIDTHS = (1440, 360)
# Pages whose screenshots are kept under docs/screenshots/ as <name>-<width>.png.
SCREENSHOT_PAGES = {
    "home", "market", "round", "login", "dashboard", "rentals", "rental", "statement", "statement-month", "nodes",
    "provider-report", "system-report",
}  # fmt: skip
# Reports seen by the demo's provider (its node carries the buyer's rentals) and by the operator (staff only).
REPORT_PAGES = (
    ("provider@janction.localhost", "provider-report", "/reports/provider/"),
    ("admin@janction.localhost", "system-report", "/reports/system/"),
)
CHARTS_DRAWN = "[...document.querySelectorAll('canvas[data-chart]')].map(c => Boolean(c.chart))"


def _axe_findings(page, axe_source: str) -> list[str]:
    """Run axe-core on the page and return its serious and critical findings, one line each."""
    page.evaluate(axe_source)  # through the DevTools protocol: the page's CSP does not apply to it
    violations = page.evaluate(
        "axe.run(document).then(r => r.violations.filter(v => ['serious', 'critical'].includes(v.impact))"
        ".map(v => v.impact + ' ' + v.id + ': ' + v.nodes.slice(0, 3).map(n => n.html).join(' | ')))"
    )
    return violations


def buyer_journey(page) -> None:
    """Rent a vGPU that runs a while: watch its GPU chart, extend it, cancel it after confirming, export the CSV."""
    from playwright.sync_api import expect

    page.goto("/dashboard/")
    page.click("#demo-faucet")
    expect(page.locator(".messages")).to_contain_text("Credited 100 demo USDC")
    page.goto("/rentals/")
    page.select_option("select[name=pool]", "ampere-40g")
    page.fill("input[name=max_price]", "1.00")
    page.fill("input[name=max_duration_minutes]", "10")
    page.fill("input[name=image]", "docker.io/library/busybox:latest")
    page.fill("input[name=command]", "sh -c 'echo busy; sleep 120'")
    page.click("#rent-submit")
    page.wait_for_url("**/rentals/*/")
    expect(page.locator("#rental-state")).to_have_text("Running", timeout=90_000)
    # The demo agent's heartbeats carry its fake GPUs' load; htmx brings the chart in within a refresh or two.
    expect(page.locator("#gpu-util-chart")).to_be_visible(timeout=60_000)
    drawn = "Boolean(document.getElementById('gpu-util-chart').chart)"  # page.evaluate: the CSP forbids eval
    wait_for(lambda: page.evaluate(drawn), 10, "Chart.js to draw the GPU chart")
    expect(page.locator("#gpu-section .badge.fake")).to_have_text("FAKE GPUs")
    page.select_option("#extend-minutes", "15")
    page.click("#extend-button")
    expect(page.locator(".messages")).to_contain_text("Extended by 15 minutes")
    expect(page.locator("#events")).to_contain_text("Extended by 15 min")
    page.click("#cancel-button")
    expect(page.locator("#cancel-confirm")).to_contain_text("Held in escrow now")
    page.click("#confirm-cancel")
    expect(page.locator("#rental-state")).to_have_text("Cancelled")
    # The last usage charge and the refund post when the agent reports the stop: wait for them (settled).
    for _ in range(60):
        page.reload()
        if page.locator("#rental-settled").inner_text() != "not yet":
            break
        time.sleep(1)
    expect(page.locator("#rental-settled")).not_to_have_text("not yet")
    page.goto("/statement/")
    expect(page.locator("#statement")).to_contain_text("Escrow top-up")
    with page.expect_download() as download:
        page.click("#statement-csv")
    rows = list(csv.DictReader(open(download.value.path(), newline="")))
    assert any(row["memo"].startswith("Escrow top-up: rental") for row in rows), rows[:5]
    shown = page.locator("#statement-pager span")
    total = int(re.search(r"(\d+) entries", shown.inner_text()).group(1)) if shown.count() else None
    assert len(rows) == (total if total is not None else page.locator("#statement tbody tr").count())
    # This month's statement as PDF (WeasyPrint): every entry of the month, with the page's totals.
    month = time.strftime("%Y-%m", time.gmtime())
    page.goto(f"/statement/?month={month}")
    expect(page.locator("#statement-totals")).to_contain_text("Escrow USDC")
    with page.expect_download() as download:
        page.click("#statement-pdf")
    assert download.value.suggested_filename == f"janction-statement-{month}.pdf"
    pdf = PdfReader(download.value.path())
    text = " ".join(" ".join(p.extract_text() for p in pdf.pages).split())
    assert f"Entries ({len(rows)})" in text and "Escrow top-up: rental" in text, text[:1000]
    for cell in page.locator("#statement-totals tbody tr").first.locator("td").all_inner_texts():
        assert cell.strip() in text


def operator_and_provider_journey(browser, site, watch) -> None:
    """The provider sets a price; the operator quarantines the node in the admin and it leaves the market."""
    from playwright.sync_api import expect

    context = browser.new_context(base_url=site["base"], viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    watch(page)

    def log_in(email: str) -> None:
        page.goto("/accounts/login/")
        page.fill("input[name=login]", email)
        page.fill("input[name=password]", site["passwords"][email])
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard/")

    try:
        log_in("provider@janction.localhost")
        page.goto("/nodes/")
        card = page.locator("section.node", has_text="demo-node")
        card.locator("input[name=reserve_price]").fill("0.42")
        card.locator(".ask-form button").click()
        expect(page.locator(".messages")).to_contain_text("ask 0.42 USDC per vGPU-hour, on sale")
        page.goto("/market/")
        expect(page.locator("#market-nodes")).to_contain_text("0.42")
        page.click("form[action='/accounts/logout/'] button")

        log_in("admin@janction.localhost")
        page.goto("/admin/nodes/node/?q=demo-node")
        page.locator("input[name=_selected_action]").first.check()
        page.select_option("select[name=action]", "quarantine")
        page.click("button[name=index]")
        expect(page.locator(".messagelist")).to_contain_text("Quarantined: 1 node(s).")
        page.goto("/market/")
        expect(page.locator("#market-nodes")).to_contain_text("Quarantined")
        expect(page.locator("#pools tbody tr").first.locator("td").nth(5)).to_have_text("0")  # no vGPU free
        page.goto("/admin/nodes/node/?q=demo-node")
        page.locator("input[name=_selected_action]").first.check()
        page.select_option("select[name=action]", "release")
        page.click("button[name=index]")
        expect(page.locator(".messagelist")).to_contain_text("Released: 1 node(s).")
        for _ in range(30):  # offline until the agent's next heartbeat brings it online
            page.goto("/market/")
            if "Online" in page.locator("#market-nodes").inner_text():
                break
            time.sleep(1)
        expect(page.locator("#market-nodes")).to_contain_text("Online")
    finally:
        context.close()


def test_every_main_page_is_accessible_fits_360_px_and_loads_only_from_this_server(site, browser, screenshots):
    """axe-core on every main page, no horizontal scroll at 360 or 1440 px, the mobile menu, no outside request."""
    from playwright.sync_api import expect

    if not AXE.exists():
        pytest.fail("axe-core is missing: run `make js-deps` (npm ci).")
    axe_source = AXE.read_text()
    base = site["base"]
    outside, failed, findings, too_wide = [], [], [], []

    def visit(page, name: str, path: str, width: int, axe_every_width: bool = False) -> None:
        page.goto(path)
        page.wait_for_load_state("load")
        scroll = page.evaluate("document.documentElement.scrollWidth")
        if scroll > width:
            too_wide.append(f"{path} at {width} px is {scroll} px wide")
        if width == WIDTHS[0] or axe_every_width:
            findings.extend(f"{path}: {line}" for line in _axe_findings(page, axe_source))
        if name in SCREENSHOT_PAGES:
            page.screenshot(path=str(screenshots / f"{name}-{width}.png"), full_page=True)

    def watch(page) -> None:
        def request(r):
            if not (r.url.startswith(base + "/") or r.url.startswith(("data:", "blob:"))):
                outside.append(r.url)

        page.on("request", request)
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.on("pageerror", lambda error: failed.append(f"script error: {error}"))

    for width in WIDTHS:
        context = browser.new_context(base_url=base, viewport={"width": width, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        watch(page)
        try:
            visit(page, "home", "/", width)
            # The demo agent's node is online; when the page came first, htmx's refresh (every 10 s) shows it.
            expect(page.locator("#figure-nodes-online")).not_to_have_text("0", timeout=30_000)
            visit(page, "market", "/market/", width)
            expect(page.locator("#market-nodes")).to_contain_text("FAKE GPUs")
            round_link = page.locator("#rounds a").first
            if round_link.count():
                visit(page, "round", round_link.get_attribute("href"), width)
                expect(page.locator("#round-digest")).not_to_be_empty()
            visit(page, "login", "/accounts/login/", width)
            visit(page, "signup", "/accounts/signup/", width)
            page.goto("/no-such-page/")
            findings.extend(f"404: {line}" for line in _axe_findings(page, axe_source))
            failed.remove(f"404 {base}/no-such-page/")

            page.goto("/accounts/login/")
            page.fill("input[name=login]", "buyer@janction.localhost")
            page.fill("input[name=password]", "not the password")
            page.click("button[type=submit]")
            expect(page.locator("main form")).to_contain_text("not correct")  # the error is in the form
            failed[:] = [f for f in failed if f != f"400 {base}/accounts/login/"]  # refused on purpose
            page.fill("input[name=password]", site["passwords"]["buyer@janction.localhost"])
            page.click("button[type=submit]")
            page.wait_for_url("**/dashboard/")
            if width == 360:
                menu = page.locator("#nav-toggle")
                expect(menu).to_be_visible()
                expect(page.locator("#site-nav")).to_be_hidden()
                menu.click()
                expect(page.locator("#site-nav >> text=Statement")).to_be_visible()
                assert page.evaluate("document.documentElement.scrollWidth") <= width
                page.screenshot(path=str(screenshots / "menu-360.png"))
                page.keyboard.press("Escape")
                expect(page.locator("#site-nav")).to_be_hidden()
            if width == WIDTHS[0]:
                buyer_journey(page)
            visit(page, "dashboard", "/dashboard/", width)
            visit(page, "rentals", "/rentals/", width)
            rental_link = page.locator("#rentals a").first
            if rental_link.count():
                visit(page, "rental", rental_link.get_attribute("href"), width)
            visit(page, "statement", "/statement/", width)
            visit(page, "statement-month", "/statement/?month=" + time.strftime("%Y-%m", time.gmtime()), width)
            visit(page, "nodes", "/nodes/", width)
            visit(page, "profile", "/settings/profile/", width, axe_every_width=True)
            visit(page, "wallets", "/settings/wallets/", width)
            visit(page, "api-keys", "/settings/api-keys/", width)
            visit(page, "two-factor", "/accounts/2fa/", width)
            visit(page, "payouts", "/payouts/", width)
            visit(page, "stake", "/stake/", width)
            visit(page, "deposit", "/deposit/", width)
            # Notifications: the buyer's rental started and ended (cancelled) above; the bell counts them.
            visit(page, "notifications", "/notifications/", width, axe_every_width=True)
            expect(page.locator("#notifications-list")).to_contain_text("is running")
            expect(page.locator("#notifications-list")).to_contain_text("ended (Cancelled)")
            visit(page, "notification", page.locator("#notifications-list a").first.get_attribute("href"), width, True)
            expect(page.locator("#notification-body")).to_contain_text("Rental")
        finally:
            context.close()
        for email, name, path in REPORT_PAGES:
            context = browser.new_context(base_url=base, viewport={"width": width, "height": 900})
            page = context.new_page()
            page.set_default_timeout(20_000)
            watch(page)
            try:
                page.goto("/accounts/login/")
                page.fill("input[name=login]", email)
                page.fill("input[name=password]", site["passwords"][email])
                page.click("button[type=submit]")
                page.wait_for_url("**/dashboard/")
                visit(page, name, path, width)
                drawn = page.evaluate(CHARTS_DRAWN)
                assert drawn and all(drawn), f"{path}: Chart.js drew {drawn}"
            finally:
                context.close()
    operator_and_provider_journey(browser, site, watch)
    assert not outside, outside
    assert not findings, "\n".join(findings)
    assert not too_wide, too_wide
    assert not failed, failed


def readme_service() -> str:
    """Return the README's service block (deploy, then call)."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("A service: a rental that exposes an HTTP port")
    return re.search(r"```bash\n(.*?)```", readme[start:], re.S).group(1)


def _buyer_key(site) -> tuple[Browserless, str]:
    client = Browserless(site["base"])
    client.log_in("buyer@janction.localhost", site["passwords"]["buyer@janction.localhost"])
    client.get("/settings/api-keys/")
    _, page = client.post("/settings/api-keys/", {"name": f"svc-{time.monotonic_ns()}"})
    return client, html.unescape(re.search(r'<code id="new-key-value">(.*?)</code>', page).group(1))


def _cancel_services(site, key: str) -> None:
    """Cancel the buyer's running services, so the demo node's vGPUs are free for the next test."""
    request = urllib.request.Request(  # noqa: S310
        site["base"] + "/api/v1/rentals/?state=running&state=pending&state=allocated&state=starting",
        headers={"Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        rentals = json.load(response)["results"]
    for rental in rentals:
        cancel = urllib.request.Request(  # noqa: S310
            f"{site['base']}/api/v1/rentals/{rental['id']}/cancel/",
            method="POST",
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": f"cancel-{rental['id']}"},
        )
        urllib.request.urlopen(cancel, timeout=10).close()  # noqa: S310


def test_the_readme_service_deploys_and_answers_through_the_endpoint(site):
    _, key = _buyer_key(site)
    setup = f"SITE={site['base']}\nKEY={key}\nuuid() {{ python3 -c 'import uuid; print(uuid.uuid4())'; }}\n"
    faucet = (
        'curl -sS -H "Authorization: Bearer $KEY" -H "Idempotency-Key: $(uuid)" -H "Content-Type: application/json" '
        '-d \'{"currency": "USDC", "amount": "50"}\' $SITE/api/v1/ledger/faucet/ >/dev/null\n'
    )
    try:
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", setup + faucet + readme_service()],
            env=site["env"],
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Directory listing" in result.stdout, result.stdout[-2000:]
    finally:
        _cancel_services(site, key)


def test_a_buyer_deploys_the_readme_service_in_chromium_and_calls_it(site, browser):
    """The README's service, rented with the form; the browser then calls it at the URL the rental page shows."""
    from playwright.sync_api import expect

    _, key = _buyer_key(site)
    context = browser.new_context(base_url=site["base"], viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto("/accounts/login/")
        page.fill("input[name=login]", "buyer@janction.localhost")
        page.fill("input[name=password]", site["passwords"]["buyer@janction.localhost"])
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard/")
        page.click("#demo-faucet")
        page.click("nav >> text=Rentals")
        page.select_option("select[name=pool]", "ada-12g")
        page.fill("input[name=max_price]", "1.00")
        page.fill("input[name=max_duration_minutes]", "10")
        page.fill("input[name=image]", "docker.io/library/python:3.12")
        page.fill("input[name=command]", "python3 -m http.server 8000")
        page.fill("input[name=expose]", "web=8000")
        page.click("#rent-submit")
        page.wait_for_url("**/rentals/*/")
        url = page.locator("#service-section code.service-url").inner_text()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/svc/[a-z2-9]{12}/web/", url), url
        expect(page.locator("#rental-state")).to_have_text("Running", timeout=90_000)
        # The site's session cookie is sent to the ingress's host too (cookies ignore ports): it is stripped.
        service = browser.new_context(extra_http_headers={"Authorization": f"Bearer {key}"})
        service.add_cookies(context.cookies())
        calling = service.new_page()

        def answered() -> bool:
            response = calling.goto(url)
            return response is not None and response.status == 200

        wait_for(answered, 60, "the service to answer through the endpoint", site["log"])
        expect(calling.locator("body")).to_contain_text("Directory listing")
        headers = calling.goto(url).headers
        assert headers["content-security-policy"] == "sandbox"
        assert "set-cookie" not in headers
        anonymous = browser.new_context().new_page()
        assert anonymous.goto(url).status == 401
        page.reload()
        expect(page.locator("#service-section")).to_contain_text("web")
    finally:
        context.close()
        _cancel_services(site, key)
