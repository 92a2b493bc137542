"""State shared by the gateway and the operator CLI: suspension records,
notice claims, DNSBL listings, learned baselines and the audit trail.
Embedded (a SQLite file) by default; Redis for several instances."""
