"""Placement: ranking hosts for a job and saying why the others were excluded (pure)."""
