"""What every session shares: the front context, the one authority
asked every time, passthrough admission and the per-client limits."""
