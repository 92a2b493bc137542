"""Anomaly detection: sliding windows, rules and the pure engine (issue 3)."""
