"""Fixtures for the thin-client launcher's tests."""

from tests.thin_client.scripted_broker import broker, certificates, plain_broker

__all__ = ["broker", "certificates", "plain_broker"]
