"""Headless Chromium for tests that look at a page as a person would: load
it, collect what the browser complains about (console errors, uncaught
exceptions, failed loads, images that did not decode), measure what it drew,
and take a full-page screenshot.

Chromium is driven over its DevTools protocol on a pipe
(--remote-debugging-pipe: JSON messages separated by NUL on fds 3 and 4),
so nothing listens on a port and no client library is needed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageReport:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    checks: dict = field(default_factory=dict)  # what the page's script measured
    screenshot: bytes = b""


class Chromium:
    def __init__(self, binary: str) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="tracer-chromium-")
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        os.set_inheritable(to_chrome_r, True)
        os.set_inheritable(from_chrome_w, True)

        def wire() -> None:  # in the child: its fd 3 reads our commands, fd 4 writes its answers
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)  # out of the way of 3 and 4 first
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--remote-debugging-pipe",
             f"--user-data-dir={self._profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire, pass_fds=(3, 4),  # kept open past close_fds, which runs after wire()
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._out = os.fdopen(to_chrome_w, "wb", buffering=0)
        self._in = os.fdopen(from_chrome_r, "rb", buffering=0)
        self._buf = b""
        self._next = 0
        self.events: list[dict] = []

    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._out.write(json.dumps(msg).encode() + b"\0")
        return self._next

    def _read(self, timeout: float) -> dict:
        import select

        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._in.fileno(), 1 << 20)
            if not chunk:
                raise RuntimeError("chromium exited")
            self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        want = self._send(method, params, session)
        while True:
            msg = self._read(timeout)
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        for i, msg in enumerate(self.events):
            if msg.get("method") == method:
                return self.events.pop(i)
        while True:
            msg = self._read(timeout)
            if msg.get("method") == method:
                return msg
            self.events.append(msg)

    def close(self) -> None:
        try:
            self._send("Browser.close")
            self.proc.wait(10)
        except Exception:
            self.proc.kill()  # our own child, by its handle
            self.proc.wait(10)
        for f in (self._out, self._in):
            f.close()
        self._profile.cleanup()


# Measured in the page once it has loaded: images that did not decode, and
# what was drawn (SVGs with a size, texts inside them, the page's height).
_CHECKS = """(() => {
  const imgs = Array.from(document.images);
  const svgs = Array.from(document.querySelectorAll('svg'));
  const drawn = svgs.filter(s => { const r = s.getBoundingClientRect(); return r.width > 20 && r.height > 20; });
  const empty = svgs.filter(s => s.querySelectorAll('path,rect,line,text,use').length === 0);
  return JSON.stringify({
    images: imgs.length,
    broken_images: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
    svgs: svgs.length, drawn_svgs: drawn.length, empty_svgs: empty.length,
    figures: Array.from(document.querySelectorAll('figure')).map(f => f.id),
    height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth,
    title: document.title,
  });
})()"""


def inspect_page(path: Path, width: int = 1200, binary: str | None = None) -> PageReport:
    """Load ``path`` in headless Chromium; everything it complained about,
    what the page measured, and a full-page PNG."""
    binary = binary or chromium_path()
    if binary is None:
        raise FileNotFoundError("chromium")
    browser = Chromium(binary)
    report = PageReport()
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        browser.wait_event("Page.loadEventFired")
        result = browser.call("Runtime.evaluate", {"expression": _CHECKS, "returnByValue": True}, session=session)
        report.checks = json.loads(result["result"]["value"])
        shot = browser.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": report.checks["height"], "scale": 1},
        }, session=session)
        report.screenshot = base64.b64decode(shot["data"])
        for msg in browser.events:
            method, params = msg.get("method"), msg.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                report.errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                report.errors.append("exception: " + params.get("exceptionDetails", {}).get("text", "?"))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                report.errors.append("log: " + params["entry"].get("text", "?"))
            elif method == "Network.loadingFailed":
                report.errors.append("load failed: " + params.get("errorText", "?"))
    finally:
        browser.close()
    return report
