"""State shared by the gateway and the operator CLI: suspension records and
the audit trail. Embedded (a SQLite file) by default; Redis for several
instances (not built yet)."""
