"""A real headless Chromium (Debian's chromium), driven over the DevTools
protocol with aiohttp's websocket client: open a page, run JavaScript in it,
take a screenshot."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.process import free_port
from tests.support.waiting import wait_until


class Browser:
    def __init__(self) -> None:
        binary = shutil.which("chromium")
        assert binary, "install Debian's chromium"
        self.profile = tempfile.mkdtemp(prefix="mailgw-chromium-")
        port = free_port()
        self.devtools = f"127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={port}",
             f"--user-data-dir={self.profile}", "--window-size=1000,1100", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            assert self.proc.poll() is None, "chromium exited"
            try:
                urllib.request.urlopen(f"http://{self.devtools}/json/version", timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(up, timeout=30, what="chromium")
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Browser:
        self._http = aiohttp.ClientSession()
        async with self._http.get(f"http://{self.devtools}/json/list") as r:
            page = next(t for t in await r.json() if t["type"] == "page")
        self._ws = await self._http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self.call("Page.enable")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._ws.close()
        await self._http.close()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        id_ = next(self._ids)
        await self._ws.send_str(json.dumps({"id": id_, "method": method, "params": params}))
        while True:
            message = json.loads((await self._ws.receive(timeout=30)).data)
            if message.get("id") == id_:
                assert "error" not in message, message
                return message.get("result", {})

    async def _loaded(self) -> None:
        while True:
            message = json.loads((await self._ws.receive(timeout=30)).data)
            if message.get("method") == "Page.loadEventFired":
                return

    async def open(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self._loaded()

    async def run(self, script: str, navigates: bool = False) -> Any:
        """The value of `script`; with `navigates`, wait for the page it leads to."""
        result = await self.call("Runtime.evaluate", expression=script, returnByValue=True)
        if navigates:
            await self._loaded()
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def drive(script):  # type: ignore[no-untyped-def]
    """Run `script(browser)` (a coroutine function) in a fresh Chromium."""
    browser = Browser()
    try:
        async def go():  # type: ignore[no-untyped-def]
            async with browser:
                return await script(browser)

        return asyncio.run(go())
    finally:
        browser.close()
