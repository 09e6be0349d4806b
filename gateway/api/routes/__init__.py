"""The v1 routes, one module per resource; ``gateway.api.app`` mounts them under ``/v1``."""
