"""The status page and the banner, in a real headless Chromium (Debian's, driven by
Playwright), in English and Chinese. Screenshots go to /tmp for a look by eye."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from omniroute.system import DEV_TOKEN, LocalSystem
from shared.embedded import EmbeddedStack

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "Debian chromium is not installed (make installs it as root)", allow_module_level=True
    )

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SHOTS = Path("/tmp")

# The exchange's own page: fetches the banner JSON and shows it. No framework needed.
EMBED = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>Exchange</title>
<style>body{{font-family:sans-serif}}
.banner{{background:#fff3cd;padding:1rem;margin:.5rem 0}}</style>
</head><body><h1>Exchange</h1><div id="banners" role="status" aria-live="polite"></div>
<script>
fetch("{notify}/v1/banners?locale={lang}").then(r => r.json()).then(data => {{
  const box = document.getElementById("banners");
  for (const b of data.banners) {{
    const div = document.createElement("div");
    div.className = "banner " + b.severity;
    const strong = document.createElement("strong");
    strong.textContent = b.status_label + ": " + b.title;
    const p = document.createElement("p");
    p.textContent = b.body;
    div.append(strong, p);
    box.append(div);
  }}
  box.dataset.loaded = String(data.banners.length);
}});
</script></body></html>
"""


@pytest.fixture(scope="module")
def system(stack: EmbeddedStack) -> Iterator[LocalSystem]:
    running = LocalSystem(
        stack, log_dir=stack.root / "logs" / "notify_browser", mongo_db="e2e_notify_browser"
    )
    try:
        running.start(names=("notify",))
        running.wait_ready(timeout_s=60)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def incidents(system: LocalSystem) -> dict[str, str]:
    notify = system.url("notify")
    run = uuid.uuid4().hex[:6]
    current = {
        "status": "identified",
        "severity": "major",
        "title": {"en": f"BTC withdrawals delayed {run}", "zh": f"BTC 提现延迟 {run}"},
        "body": {
            "en": "Network congestion; your funds are safe.",
            "zh": "网络拥堵，您的资金安全。",
        },
        "affected": {"categories": ["withdrawal"], "assets": ["BTC"]},
    }
    old = {
        "status": "investigating",
        "severity": "minor",
        "title": {"en": f"Login slow {run}", "zh": f"登录缓慢 {run}"},
    }
    ids = {}
    for name, body in (("current", current), ("old", old)):
        reply = httpx.post(f"{notify}/v1/incidents", json=body, headers=AUTH, timeout=10)
        assert reply.status_code == 201, reply.text
        ids[name] = reply.json()["incident_id"]
    resolved = httpx.patch(
        f"{notify}/v1/incidents/{ids['old']}", json={"status": "resolved"}, headers=AUTH, timeout=10
    )
    assert resolved.status_code == 200
    ids["run"] = run
    return ids


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def exchange_site(system: LocalSystem) -> Iterator[str]:
    """A page of the exchange's website, on another origin than notify."""
    notify = system.url("notify")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            lang = "zh" if "zh" in self.path else "en"
            body = EMBED.format(lang=lang, notify=notify).encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("query", "locale", "html_lang", "texts"),
    [
        (
            "",
            "en-US",
            "en",
            [
                "Service status",
                "Current incidents",
                "BTC withdrawals delayed",
                "Recently resolved",
                "Login slow",
                "Identified",
            ],
        ),
        (
            "?lang=zh",
            "en-US",
            "zh-Hans",
            [
                "服务状态",
                "当前事件",
                "BTC 提现延迟",
                "近期已解决",
                "登录缓慢",
                "已确认原因",
                "助记词",
            ],
        ),
        ("", "zh-CN", "zh-Hans", ["服务状态", "网络拥堵，您的资金安全。"]),
    ],
)
def test_status_page_in_a_real_browser(
    system: LocalSystem,
    incidents: dict[str, str],
    browser: Any,
    query: str,
    locale: str,
    html_lang: str,
    texts: list[str],
) -> None:
    context = browser.new_context(locale=locale, java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(f"{system.url('notify')}/status{query}")
        assert page.locator("html").get_attribute("lang") == html_lang
        assert page.get_by_role("heading", level=1).inner_text() == texts[0]
        visible = page.locator("main").inner_text() + page.locator("footer").inner_text()
        for text in texts[1:]:
            assert text in visible
        # The resolved incident is under "recently resolved", not under current.
        current = page.locator("section[aria-labelledby=current]").inner_text()
        assert incidents["run"] in current
        assert "Login slow" not in current
        assert "登录缓慢" not in current
        page.screenshot(
            path=str(SHOTS / f"omniroute-status-{html_lang}-{locale}.png"), full_page=True
        )
    finally:
        context.close()


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("en", "Identified: BTC withdrawals delayed"),
        ("zh", "已确认原因: BTC 提现延迟"),
    ],
)
def test_banner_embedded_in_the_exchanges_page(
    exchange_site: str, incidents: dict[str, str], browser: Any, lang: str, expected: str
) -> None:
    page = browser.new_page()
    try:
        page.goto(f"{exchange_site}/?lang={lang}")
        page.wait_for_selector("#banners[data-loaded]", timeout=10_000)
        banner = page.locator(".banner.major", has_text=incidents["run"])
        assert banner.is_visible()
        assert banner.locator("strong").inner_text() == f"{expected} {incidents['run']}"
        assert page.locator(".banner", has_text="Login slow").count() == 0  # resolved: no banner
        page.screenshot(path=str(SHOTS / f"omniroute-banner-{lang}.png"), full_page=True)
    finally:
        page.close()
