"""Faults injected into real services while the dashboard works: nothing half-done, nothing lost."""
