"""Use cases: sessions (context, authority, admission, limits),
environment push, the golden test, the directory, live state, reconciliation."""
