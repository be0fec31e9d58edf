"""KVM-VDI thin-client launcher: broker JSON API client, session state machine, Tk UI, viewers."""

__version__ = "0.1.0"
