"""Hosts, keys, GPUs, prices, latency and leases as values."""
