"""The checks behind scripts/check-deploy, one module per kind of deployment file."""
