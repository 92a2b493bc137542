"""The gateway under test, in-process: a real Gateway on its own event loop
in a thread, listening on a loopback port, so tests talk plain SMTP to it."""

from __future__ import annotations

import asyncio
import threading

import uvloop

from mailgw.config import Config
from mailgw.gateway import Gateway


class GatewayThread:
    def __init__(self, config: Config):
        self.gateway = Gateway(config)
        self._loop = (uvloop.new_event_loop() if config.gateway.event_loop == "uvloop"
                      else asyncio.new_event_loop())
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.gateway.addresses[0][1]

    @property
    def http(self) -> str:
        host, port = self.gateway.http_addresses[0]
        return f"http://{host}:{port}"

    def call(self, coro, timeout: float = 30.0):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> GatewayThread:
        self._thread.start()
        self.call(self.gateway.start())
        return self

    def stop(self) -> None:
        self.call(self.gateway.stop(drain_timeout=5.0))
        # transports closed just now finish on the loop's next turns
        self.call(asyncio.sleep(0.05))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> GatewayThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
