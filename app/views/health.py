"""``/healthz`` (the process answers) and ``/readyz`` (it should get traffic), for HAProxy and systemd.

Both are public and tell nothing secret: the replica's name and which check failed.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.api.describe import Media, describe
from app.services import services_of

NO_STORE = {"Cache-Control": "no-store"}


ALIVE = Media(
    "application/json",
    "{status: alive, replica, duties, bus}: this replica's process answers; "
    "bus says whether it hears the other replicas (always true without a cluster)",
)
READY = Media("application/json", "{ready, replica, checks}: whether this replica serves (503 when not)")


@describe("Liveness of this replica (for load balancers and systemd)", responses={200: ALIVE})
async def healthz(request: Request) -> Response:
    node = services_of(request).cluster
    return JSONResponse(
        {
            "status": "alive",
            "replica": node.name,
            "duties": node.duties.held,
            "running_duties": node.duties.running(),
            "bus": node.bus.connected,
        },
        headers=NO_STORE,
    )


@describe("Readiness of this replica: its database and services", responses={200: READY, 503: READY})
async def readyz(request: Request) -> Response:
    node = services_of(request).cluster
    readiness = await node.health.readiness()
    return JSONResponse(
        {"ready": readiness.ready, "replica": node.name, "checks": readiness.checks},
        status_code=200 if readiness.ready else 503,
        headers=NO_STORE,
    )


routes = [
    Route("/healthz", healthz, methods=["GET", "HEAD"], name="healthz"),
    Route("/readyz", readyz, methods=["GET", "HEAD"], name="readyz"),
]
