"""Where consoles live in the URL space, in one place (the uvicorn protocol needs it too)."""

from __future__ import annotations

# The console websocket of VM 12 is /console/ws/12; the ticket cookie is scoped to
# exactly that path, so two consoles open in two tabs never pick up each other's ticket.
CONSOLE_WEBSOCKET_PREFIX = "/console/ws/"
TICKET_COOKIE = "kvmvdi_console"


def console_websocket_path(vm_id: int) -> str:
    return f"{CONSOLE_WEBSOCKET_PREFIX}{int(vm_id)}"
