"""Widgets that draw what they are given and do no I/O."""
