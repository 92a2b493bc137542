"""The directory of connected mail systems: who is this client?

A client is a system when its IP lies in one of the system's networks (the
longest matching prefix wins) or when it authenticated with the system's
credentials. Lookups are dictionary probes, one per prefix length in use, so
thousands of systems cost no more per connection than ten.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from mailgw.config import System


class SystemDirectory:
    def __init__(self, systems: Iterable[System]):
        self.load(systems)

    def load(self, systems: Iterable[System]) -> None:
        """(Re)build from `systems`: at start, and when the config is reloaded."""
        by_id: dict[str, System] = {}
        by_login: dict[str, tuple[System, str]] = {}
        # version -> prefix length -> network address as int -> system
        nets: dict[int, dict[int, dict[int, System]]] = {4: {}, 6: {}}
        for system in systems:
            by_id[system.id] = system
            for cred in system.auth:
                by_login[cred.username] = (system, cred.password_hash)
            for net in system.networks:
                table = nets[net.version].setdefault(net.prefixlen, {})
                table[int(net.network_address)] = system
        self._by_id, self._by_login, self._nets = by_id, by_login, nets
        self._prefixes = {v: sorted(tables, reverse=True) for v, tables in nets.items()}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):
        return iter(self._by_id.values())

    def get(self, system_id: str) -> System | None:
        return self._by_id.get(system_id)

    def by_ip(self, address: str) -> System | None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        bits = 32 if ip.version == 4 else 128
        value = int(ip)
        tables = self._nets[ip.version]
        for prefix in self._prefixes[ip.version]:
            mask = ((1 << prefix) - 1) << (bits - prefix)
            system = tables[prefix].get(value & mask)
            if system is not None:
                return system
        return None

    def login(self, username: str) -> tuple[System, str] | None:
        """The system owning a login and the stored password hash."""
        return self._by_login.get(username)
