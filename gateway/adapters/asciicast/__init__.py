"""Session recordings as asciicast v2 files: writing, replay."""
