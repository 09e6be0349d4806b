"""Outbound adapters: storage (SQL), the audit stores, the gateway's
SSH connections to hosts, key files and recordings."""
