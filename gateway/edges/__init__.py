"""Inbound edges: the SSH front and the HTTP API. They adapt a protocol
to the services and map errors once."""
