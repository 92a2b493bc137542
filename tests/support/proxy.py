"""A TCP forwarder in front of a test destination, for faults of the network
rather than of SMTP: a next hop that is slow to answer a new connection
(`hold`), or gone (`refuse`). Bytes pass through unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Proxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1"):
        self.host, self.upstream_port, self.port = host, upstream_port, 0
        self.refuse = False  # close new connections at once
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._open = asyncio.Event()  # set: connections go through; clear: they wait
        self._loop.call_soon_threadsafe(self._open.set)

    def hold(self, on: bool) -> None:
        """While on, new connections are accepted and wait, silent, as at a
        next hop that is slow to answer; those waiting go through when off."""
        self._loop.call_soon_threadsafe(self._open.clear if on else self._open.set)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        # closed however this ends, a stop's cancel included: a transport
        # left open when the loop closes is collected later, as a
        # ResourceWarning blamed on whichever test runs then
        with contextlib.ExitStack() as opened:
            opened.callback(writer.close)
            if self.refuse:
                return
            try:
                await self._open.wait()
                up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
            except OSError:
                return
            opened.callback(up_writer.close)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError):
                    while chunk := await src.read(65536):
                        dst.write(chunk)
                        await dst.drain()
                dst.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def start(self) -> Proxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, self.host, 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)  # the closed transports' connection_lost

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
