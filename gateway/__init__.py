"""gpuhop gateway: an SSH jump host in front of regional GPU hosts."""

__version__ = "0.1.0"
