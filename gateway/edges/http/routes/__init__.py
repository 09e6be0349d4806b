"""The v1 routes, one module per resource; ``gateway.edges.http.app`` mounts them under ``/v1``."""
