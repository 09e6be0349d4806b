"""The gateway's HTTP API (v1), as the client sees it.

    models.py   frozen dataclasses of the responses the client reads (no I/O)
    errors.py   a failed response or transport error -> one ``ClientError``, once
    base.py     each endpoint as a ``Call``: the request, and how its answer is parsed
    clients.py  ``Client`` (CLI, admin) and ``AsyncClient`` (TUI) sending those calls

As httpx does with ``Client``/``AsyncClient``, the two clients differ only in how
they send; requests, parsing and error mapping are written once. This package
never imports the gateway: tests/unit/test_client_api.py checks the models
against the committed ``docs/openapi.json``. The package itself imports nothing,
so a view function can use the models without loading httpx.
"""
