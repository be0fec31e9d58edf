"""The OpenAPI 3.1 description of the broker API, kept next to the code it describes.

``tests/broker/test_api.py`` checks that every ``/api/v1`` route is described
(and nothing else), so the two cannot drift apart silently.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from app.api.bodies import DesktopRequest, Login, SnapshotTake, UserPower
from app.i18n import gettext as _

ERROR_CODES = [
    "invalid", "invalid_json", "body_too_large", "unsupported_media_type",
    "invalid_credentials", "throttled", "directory_unavailable", "invalid_token",
    "pool_not_found", "not_allowed", "no_free_desktop", "maintenance", "all_hypervisors_down",
    "desktop_limit", "desktop_failed", "console_unavailable", "lease_not_found", "lease_ended",
    "not_your_desktop", "power_refused", "snapshots_not_allowed", "snapshots_unavailable", "snapshot_limit",
    "snapshot_failed", "not_found", "busy", "no_disk", "hypervisor_unavailable", "hypervisor_error",
]  # fmt: skip


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """A request body described by its model (the one the reader validates against)."""
    return {"required": required, "content": {"application/json": {"schema": model.model_json_schema()}}}


# Any endpoint that reads a body may refuse it so (see app.api.reader).
BODY_REFUSALS = {
    "400": _err("invalid (fields names each refused field) or invalid_json"),
    "413": _err("body_too_large"),
    "415": _err("unsupported_media_type"),
}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


STR = {"type": "string"}
INT = {"type": "integer"}
TIME = {"type": "string", "format": "date-time"}
ID_PARAM = {"in": "path", "required": True, "schema": INT}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        ["error", "message"],
        error={"type": "string", "enum": ERROR_CODES},
        message=STR,
        fields={"type": "object", "additionalProperties": {"type": "string"},
                "description": "a refused body: what is wrong with each field"},
        failover={"oneOf": [_ref("Failover"), {"type": "null"}]},
    ),
    "User": _obj(["username", "display_name", "source"], username=STR, display_name=STR,
                 source={"type": "string", "enum": ["local", "directory"]}),
    "Desktop": _obj(["vm_id", "name", "state"], vm_id=INT, name=STR, state=STR, snapshots={
        "type": "integer", "description": "in the pool list: snapshots the user may keep of it (0: none)"}),
    "Failover": {
        "oneOf": [
            _obj(["protocol", "host", "domain"], protocol={"const": "rdp"}, host=STR, domain=STR),
            _obj(["protocol", "server", "pool"], protocol={"const": "horizon"}, server=STR, pool=STR),
        ]
    },
    "Pool": _obj(
        ["id", "name", "description", "size", "free", "maintenance", "failover", "straight_to_desktop",
         "desktop"],
        id=INT, name=STR, description=STR, size=INT, free=INT, maintenance={"type": "boolean"},
        failover={"oneOf": [_ref("Failover"), {"type": "null"}]},
        straight_to_desktop={"type": "boolean",
                             "description": "opens a user's sole desktop at log-in"},
        desktop={"oneOf": [_ref("Desktop"), {"type": "null"}]},
    ),
    "Snapshot": _obj(
        ["name", "description", "created_at", "state", "with_memory", "current", "parent"],
        name=STR, description=STR, created_at=TIME, current={"type": "boolean"},
        state={"type": "string", "description": "the desktop's state when it was taken"},
        with_memory={"type": "boolean", "description": "taken running: reverting resumes the session"},
        parent={"oneOf": [STR, {"type": "null"}]},
    ),
    "SnapshotOutcome": {
        "type": "object", "required": ["state", "message", "snapshots"],
        "properties": {
            "state": {"type": "string", "enum": ["succeeded", "running", "failed"]},
            "message": {"type": "string"},
            "snapshots": {"type": "array", "items": {"$ref": "#/components/schemas/Snapshot"}},
        },
    },
    "Lease": _obj(["id", "expires_at", "heartbeat_interval"], id=INT, expires_at=TIME,
                  heartbeat_interval={"type": "integer", "description": "seconds between heartbeats"}),
    "Connection": _obj(
        ["protocol", "host", "port", "tls_port", "password", "ticket", "proxy", "title", "vv", "console_url"],
        protocol={"const": "spice"}, host=STR,
        port={"type": ["integer", "null"], "description": "plain SPICE port; null when TLS only"},
        tls_port={"type": ["integer", "null"], "description": "SPICE TLS port (client and qemu talk TLS)"},
        host_subject={"type": "string", "description": "subject of the TLS certificate (host-subject)"},
        ca={"type": "string", "description": "PEM of the dashboard's CA that signed the SPICE certificate"},
        password={"type": "string", "description": "SPICE password, valid for a short time"},
        ticket={"type": "string", "description": "console ticket for the gateway (60 s for new connections)"},
        proxy={"type": "string", "description": "http://ticket:<ticket>@<gateway>:<port> for remote-viewer"},
        title=STR, vv={"type": "string", "description": "a complete .vv file for remote-viewer"},
        console_url={"type": "string", "description": "the in-browser console page of this desktop"},
    ),
}  # fmt: skip


def _paths() -> dict[str, Any]:
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    unauthorized = {"401": _err("missing, expired or revoked token (invalid_token)")}
    return {
        "/api/v1/login": {"post": {
            "summary": "Log in (local account or directory) and get a bearer token",
            "security": [],
            "requestBody": _body(Login),
            "responses": {
                "200": _json(_obj(["token", "expires_at", "user"], token=STR, expires_at=TIME,
                                  user=_ref("User")), "logged in"),
                **BODY_REFUSALS,
                "401": _err("invalid_credentials"),
                "429": _err("throttled (see Retry-After)"),
                "503": _err("directory_unavailable, or busy (too many log-ins at once; see Retry-After)"),
            },
        }},
        "/api/v1/logout": {"post": {
            "summary": "Revoke the token", "security": bearer,
            "responses": {"204": {"description": "token revoked"}, **unauthorized},
        }},
        "/api/v1/pools": {"get": {
            "summary": "Pools the user may use, with free desktops and the user's own desktop",
            "security": bearer,
            "responses": {
                "200": _json(_obj(
                    ["pools", "straight_to"], pools={"type": "array", "items": _ref("Pool")},
                    straight_to={"type": ["integer", "null"],
                                 "description": "the pool whose desktop to open at once after log-in"},
                ), "the pools"),
                **unauthorized,
            },
        }},
        "/api/v1/pools/{pool_id}/desktop": {"post": {
            "summary": "Get a desktop of the pool (the one already held, or a free one)",
            "security": bearer,
            "parameters": [{"name": "pool_id", **ID_PARAM}],
            "requestBody": _body(DesktopRequest, required=False),
            "responses": {
                "200": _json({"oneOf": [
                    _obj(["status", "lease", "desktop", "connection"], status={"const": "ready"},
                         lease=_ref("Lease"), desktop=_ref("Desktop"), connection=_ref("Connection")),
                    _obj(["status", "failover"], status={"const": "failover"}, reason=STR,
                         failover=_ref("Failover")),
                ]}, "ready to connect, or the pool's failover when all its hypervisors are down"),
                "202": _json(_obj(["status", "retry_after", "desktop"], status={"const": "booting"},
                                  retry_after=INT, desktop=_ref("Desktop")),
                             "the desktop is starting: ask again after retry_after seconds"),
                **BODY_REFUSALS,
                "403": _err("not_allowed"),
                "404": _err("pool_not_found"),
                "409": _err("no_free_desktop, maintenance, all_hypervisors_down or desktop_limit "
                            "(with failover when configured)"),
                "503": _err("desktop_failed or console_unavailable"),
                **unauthorized,
            },
        }},
        "/api/v1/leases/{lease_id}/heartbeat": {"post": {
            "summary": "Keep the lease alive", "security": bearer,
            "parameters": [{"name": "lease_id", **ID_PARAM}],
            "responses": {
                "200": _json(_obj(["expires_at"], expires_at=TIME), "lease extended"),
                "404": _err("lease_not_found"), "410": _err("lease_ended"), **unauthorized,
            },
        }},
        "/api/v1/leases/{lease_id}/release": {"post": {
            "summary": "Give the desktop back", "security": bearer,
            "parameters": [{"name": "lease_id", **ID_PARAM}],
            "responses": {"204": {"description": "released"}, "404": _err("lease_not_found"), **unauthorized},
        }},
        "/api/v1/desktops/{vm_id}/power": {"post": {
            "summary": "Power action on the user's own desktop", "security": bearer,
            "parameters": [{"name": "vm_id", **ID_PARAM}],
            "requestBody": _body(UserPower),
            "responses": {
                "202": _json(_obj(["state"], state=STR), "action started"),
                **BODY_REFUSALS, "403": _err("not_your_desktop"), "409": _err("power_refused"),
                **unauthorized,
            },
        }},
        "/api/v1/desktops/{vm_id}/snapshots": {
            "get": {
                "summary": "Snapshots of the user's own persistent desktop (where its pool offers them)",
                "security": bearer, "parameters": [{"name": "vm_id", **ID_PARAM}],
                "responses": {
                    "200": _json(_obj(["limit", "snapshots"], limit={
                        "type": "integer", "description": "how many the user may keep"},
                        snapshots={"type": "array", "items": _ref("Snapshot")}), "the snapshots"),
                    "403": _err("not_your_desktop or snapshots_not_allowed"),
                    "409": _err("snapshots_unavailable (a volatile or VDI desktop)"), **unauthorized,
                },
            },
            "post": {
                "summary": "Take a snapshot (with memory when the desktop runs)", "security": bearer,
                "parameters": [{"name": "vm_id", **ID_PARAM}],
                "requestBody": _body(SnapshotTake, required=False),
                "responses": {
                    "200": _json(_ref("SnapshotOutcome"), "taken"),
                    "202": _json(_ref("SnapshotOutcome"), "still being taken: list again later"),
                    **BODY_REFUSALS, "403": _err("not_your_desktop or snapshots_not_allowed"),
                    "409": _err("snapshot_limit, busy, snapshots_unavailable or snapshot_failed"),
                    **unauthorized,
                },
            },
        },
        "/api/v1/desktops/{vm_id}/snapshots/{name}/revert": {"post": {
            "summary": "Put the desktop back where the snapshot was", "security": bearer,
            "parameters": [{"name": "vm_id", **ID_PARAM}, {"name": "name", "in": "path", "required": True,
                                                            "schema": STR}],
            "responses": {
                "200": _json(_ref("SnapshotOutcome"), "reverted"),
                "202": _json(_ref("SnapshotOutcome"), "still reverting"),
                "403": _err("not_your_desktop or snapshots_not_allowed"), "404": _err("not_found"),
                "409": _err("busy or snapshot_failed"), **unauthorized,
            },
        }},
        "/api/v1/desktops/{vm_id}/snapshots/{name}": {"delete": {
            "summary": "Delete a snapshot", "security": bearer,
            "parameters": [{"name": "vm_id", **ID_PARAM}, {"name": "name", "in": "path", "required": True,
                                                            "schema": STR}],
            "responses": {
                "200": _json(_ref("SnapshotOutcome"), "deleted"),
                "202": _json(_ref("SnapshotOutcome"), "still deleting"),
                "403": _err("not_your_desktop or snapshots_not_allowed"), "404": _err("not_found"),
                "409": _err("busy or snapshot_failed"), **unauthorized,
            },
        }},
        "/api/v1/openapi.json": {"get": {
            "summary": "This description", "security": [],
            "responses": {"200": {"description": "the OpenAPI 3.1 document"}},
        }},
    }  # fmt: skip


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": _("KVM-VDI broker API"),
            "version": "1",
            "description": "Desktops for thin clients and scripts; errors are {error, message} "
            "(and fields, for a refused body).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
        "paths": _paths(),
    }
