"""gpuhop."""
