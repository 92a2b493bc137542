"""A real authoritative DNS server on a loopback port (dnslib), with records
the test sets as zone-file lines. Names it does not know get NXDOMAIN; known
names without the asked type get an empty answer (NODATA), as on the internet.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from dnslib import QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class _ZoneResolver(BaseResolver):
    def __init__(self) -> None:
        self.records: list[RR] = []
        self.servfail: set[str] = set()
        self.lock = threading.Lock()

    def resolve(self, request, handler):
        reply = request.reply()
        qname = request.q.qname
        qtype = QTYPE[request.q.qtype]
        name = str(qname).lower()
        with self.lock:
            if name in self.servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            known = [rr for rr in self.records if str(rr.rname).lower() == name]
        for rr in known:
            if qtype == "ANY" or QTYPE[rr.rtype] == qtype:
                reply.add_answer(rr)
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class DNSTestServer:
    """`with DNSTestServer() as dns: dns.add("example.test. 60 IN MX 10 mx.example.test.")`"""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self._resolver = _ZoneResolver()
        self._servers: list[DNSServer] = []

    def add(self, zone_text: str) -> None:
        with self._resolver.lock:
            self._resolver.records.extend(RR.fromZone(zone_text))

    def remove(self, name: str) -> None:
        name = name.lower().rstrip(".") + "."
        with self._resolver.lock:
            self._resolver.records = [
                rr for rr in self._resolver.records if str(rr.rname).lower() != name
            ]

    def fail(self, name: str) -> None:
        """Answer SERVFAIL for this name from now on."""
        with self._resolver.lock:
            self._resolver.servfail.add(name.lower().rstrip(".") + ".")

    def _free_port(self) -> int:
        # One port for both UDP and TCP: probe until both can bind.
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((self.host, 0))
                port = u.getsockname()[1]
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    try:
                        t.bind((self.host, port))
                    except OSError:
                        continue
                return port
        raise RuntimeError("no free port for the test DNS server")

    def start(self) -> DNSTestServer:
        self.port = self.port or self._free_port()
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        for tcp in (False, True):
            server = DNSServer(self._resolver, address=self.host, port=self.port, tcp=tcp,
                               logger=quiet)
            server.start_thread()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        for server in self._servers:
            with contextlib.suppress(Exception):
                server.stop()
                server.server.server_close()
        self._servers.clear()

    def __enter__(self) -> DNSTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
