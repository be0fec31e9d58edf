"""How the dashboard is served: uvicorn's options and the limits every request meets
(body size and time, head size and time, connections)."""
