"""Metering: session cost, totals and budgets (pure)."""
