"""Consoles: console tickets, SPICE password rotation, the browser websocket bridge, the
HTTP CONNECT gateway for native clients, and ``.vv`` files.

``service.ConsoleService`` opens and revokes consoles; ``websocket`` and ``gateway`` carry
the bytes through ``pump``'s bounded socket ends; ``sessions`` keeps the live console
sessions (limits, timeouts, one audit record each); ``wsprotocol`` is the dashboard's
uvicorn websocket protocol.
"""
