"""The gateway's SSH side towards hosts: pooled upstream connections,
probes, host-key scans and the algorithm lists."""
