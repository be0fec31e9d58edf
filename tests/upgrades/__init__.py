"""Upgrade fixtures and their tests' helpers (see fixtures.py)."""
