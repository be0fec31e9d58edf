"""The broker: pools, desktop allocation, leases, API tokens and the broker JSON API."""
