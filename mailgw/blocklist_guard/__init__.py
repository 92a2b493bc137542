"""Blocklist guard: suspensions, hold, owner notices and DNSBL watch (issues 3 and 5)."""
