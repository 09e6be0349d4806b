"""The audit log's pure parts: the hash chain, checkpoints, coalescing."""
