"""gpuhop client: the ``gpuhop`` command."""

__version__ = "0.1.0"
