"""Configuration: process settings (``process``), directory models (``directory``),
the shared field checks (``fields``) and the TOML loader (``loader``)."""
