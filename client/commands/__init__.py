"""``gpuhop``'s commands, one module per command (or group), loaded only when run.

``client.cli`` names them (module, attribute, one-line help) and imports one
when click asks for it; ``common`` holds what several commands share. The
command modules do not import each other (an import-linter contract).
"""
