"""Live state for browsers: the hub (publish/subscribe) and its websocket endpoint."""
