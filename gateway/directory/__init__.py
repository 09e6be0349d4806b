"""The directory: users, keys, roles, teams, data sets, budgets and hosts, from config and storage.

The config file seeds the directory and stays authoritative for what it
declares (source ``config``: read-only to admin commands); admins add the rest
at run time (source ``admin``), kept in storage (``gateway.storage.directory``).
``view`` merges the two and checks changes with the config's own validation;
``service`` writes checked changes, audits them and tells the running gateway
to swap in a new inventory.
"""
