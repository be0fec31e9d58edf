"""Hypervisor records through HTTP: forms and the JSON API, validation, removal, audit."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from app.db.schema import hypervisors, vms
from tests.dashboard import BrowserLikeClient, RunningDashboard

API = "/api/v1/admin/hypervisors"

TEST_HV = {
    "name": "sim1",
    "transport": "test",
    "address": "",
    "ssh_port": "22",
    "ssh_user": "vdi",
    "libvirt_uri": "",
    "spice_address": "",
    "images_dir": "/srv/vdi/images",
    "volatile_dir": "/srv/vdi/volatile",
    "iso_dir": "/srv/vdi/iso",
}


def _input_value(page: str, name: str) -> str:
    match = re.search(rf'<input[^>]*name="{name}"[^>]*value="([^"]*)"', page)
    assert match, f"no input {name}"
    return html.unescape(match.group(1))


def _field_errors(page: str) -> dict[str, str]:
    return {
        name: html.unescape(text)
        for name, text in re.findall(r'class="invalid-feedback" id="e-([a-z_]+)">([^<]+)<', page)
    }


async def _add(admin: BrowserLikeClient, **values: Any) -> int:
    response = await admin.post("/hypervisors/new", {**TEST_HV, **values})
    assert response.status_code == 303, response.text
    listing = (await admin.get(API)).json()["hypervisors"]
    return next(hv["id"] for hv in listing if hv["name"] == values.get("name", TEST_HV["name"]))


async def test_a_bad_submission_names_each_field_and_loses_nothing(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    submitted = {
        **TEST_HV,
        "name": "bad name!",
        "transport": "ssh",
        "address": "host with spaces",
        "ssh_port": "70000",
        "ssh_user": "Root User",
        "spice_address": "-oProxyCommand=x",
        "images_dir": "relative/images",
        "volatile_dir": "/srv/../etc",
        "iso_dir": "/srv/vdi/iso",
        "maintenance": "on",
    }
    response = await admin.post("/hypervisors/new", submitted)
    assert response.status_code == 400
    errors = _field_errors(response.text)
    assert set(errors) == {
        "name", "address", "ssh_port", "ssh_user", "spice_address", "images_dir", "volatile_dir"
    }  # fmt: skip
    assert errors["name"].startswith("Name:")
    assert errors["address"].startswith("SSH address:")
    assert errors["ssh_port"].startswith("SSH port:")
    assert errors["ssh_user"].startswith("SSH user:")
    assert errors["spice_address"].startswith("Console network address:")
    assert errors["images_dir"].startswith("Images directory:")
    assert errors["volatile_dir"].startswith("Volatile directory:")
    # Everything comes back as typed, so nothing has to be typed again.
    for field in [
        "name",
        "address",
        "ssh_port",
        "ssh_user",
        "spice_address",
        "images_dir",
        "volatile_dir",
        "iso_dir",
    ]:
        assert _input_value(response.text, field) == submitted[field], field
    assert 'id="f-maintenance" name="maintenance" value="on"' in response.text and "checked" in response.text
    assert '<option value="ssh" selected>' in response.text
    # The summary links every error to its field.
    assert 'href="#f-address"' in response.text
    assert (await admin.get(API)).json()["hypervisors"] == []


async def test_ssh_needs_an_address_and_a_user(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    response = await admin.post(
        "/hypervisors/new", {**TEST_HV, "transport": "ssh", "address": "", "ssh_user": ""}
    )
    errors = _field_errors(response.text)
    assert "required for the ssh transport" in errors["address"]
    assert "required for the ssh transport" in errors["ssh_user"]


async def test_names_are_unique(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    await _add(admin)
    response = await admin.post("/hypervisors/new", {**TEST_HV, "name": "SIM1"})
    assert response.status_code == 400
    assert _field_errors(response.text)["name"] == "Name: another hypervisor is already called SIM1."


async def test_a_test_hypervisor_is_added_listed_and_audited(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    response = await admin.post("/hypervisors/new", TEST_HV)
    assert response.status_code == 303
    assert response.headers["location"] == "/hypervisors?toast=sim1+added."
    page = (await admin.get("/hypervisors")).text
    assert "sim1" in page and "test: test:///default" in page
    record = (await admin.get(API)).json()["hypervisors"][0]
    assert record["libvirt_uri"] == "test:///default", "the test transport defaults to test:///default"
    assert record["host_key"] is None
    # The registry picked the new record up at once: libvirt's test driver answers.
    assert (record["state"], record["connected"]) == ("up", True)
    assert record["libvirt_version"]
    audit = await dashboard.services.audit.recent(action="hypervisor_added")
    assert [(a["actor"], a["target"]) for a in audit] == [("admin", "sim1")]


async def test_an_ssh_hypervisor_goes_on_to_host_key_confirmation(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    response = await admin.post(
        "/hypervisors/new",
        {**TEST_HV, "name": "hv01", "transport": "ssh", "address": "192.0.2.10", "ssh_user": "vdi"},
    )
    assert response.status_code == 303
    assert re.match(r"/hypervisors/\d+/host-key\?toast=", response.headers["location"])
    page = (await admin.get("/hypervisors")).text
    assert "Host key not confirmed yet" in page


async def test_the_edit_form_shows_and_stores_changes(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    hv_id = await _add(admin)
    form = (await admin.get(f"/hypervisors/{hv_id}/edit")).text
    assert _input_value(form, "images_dir") == "/srv/vdi/images"
    response = await admin.post(
        f"/hypervisors/{hv_id}/edit",
        {**TEST_HV, "name": "sim-renamed", "maintenance": "on", "iso_dir": "/isos/"},
    )
    assert response.status_code == 303
    record = (await admin.get(f"{API}/{hv_id}")).json()
    assert (record["name"], record["maintenance"], record["iso_dir"]) == ("sim-renamed", True, "/isos")
    audit = await dashboard.services.audit.recent(action="hypervisor_updated")
    assert audit[0]["details"]["changed"] == ["iso_dir", "maintenance", "name"]


async def test_a_bad_edit_keeps_the_stored_record(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    hv_id = await _add(admin)
    response = await admin.post(f"/hypervisors/{hv_id}/edit", {**TEST_HV, "libvirt_uri": "qemu:///system"})
    assert response.status_code == 400
    assert _field_errors(response.text)["libvirt_uri"].startswith("libvirt URI: for the test transport")
    assert _input_value(response.text, "libvirt_uri") == "qemu:///system"
    assert (await admin.get(f"{API}/{hv_id}")).json()["libvirt_uri"] == "test:///default"


async def test_moving_an_ssh_hypervisor_to_another_port_unpins_its_host_key(
    dashboard: RunningDashboard,
) -> None:
    admin = await dashboard.admin()
    hv_id = await _add(admin, name="hv02", transport="ssh", address="127.0.0.1", ssh_port="9")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOZ5DOLmrDLKNDakDZXWyGNMCxFk0nk6r6x2MZhkPsOv"
    await dashboard.services.db.execute(
        hypervisors.update().where(hypervisors.c.id == hv_id).values(host_key=key, host_key_confirmed=True)
    )
    unchanged = await admin.post(
        f"/hypervisors/{hv_id}/edit",
        {
            **TEST_HV,
            "name": "hv02",
            "transport": "ssh",
            "address": "127.0.0.1",
            "ssh_port": "9",
            "maintenance": "on",
        },
    )
    assert unchanged.headers["location"].startswith("/hypervisors?")
    assert (await admin.get(f"{API}/{hv_id}")).json()["host_key"]["confirmed"] is True
    moved = await admin.post(
        f"/hypervisors/{hv_id}/edit",
        {**TEST_HV, "name": "hv02", "transport": "ssh", "address": "127.0.0.1", "ssh_port": "7"},
    )
    assert moved.headers["location"].startswith(f"/hypervisors/{hv_id}/host-key")
    assert (await admin.get(f"{API}/{hv_id}")).json()["host_key"] is None


async def test_removal_asks_for_confirmation_naming_the_hypervisor(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    hv_id = await _add(admin)
    page = (await admin.get(f"/hypervisors/{hv_id}/remove")).text
    assert "Remove the hypervisor sim1?" in page
    assert "Nothing on the hypervisor itself is changed" in page
    assert (await admin.get(API)).json()["hypervisors"], "showing the page removed nothing"
    response = await admin.post(f"/hypervisors/{hv_id}/remove")
    assert response.status_code == 303
    assert (await admin.get(API)).json()["hypervisors"] == []
    assert [a["target"] for a in await dashboard.services.audit.recent(action="hypervisor_removed")] == [
        "sim1"
    ]


async def test_removal_is_refused_while_vms_are_registered(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    hv_id = await _add(admin)
    await dashboard.services.db.execute(vms.insert().values(name="desk-01", hypervisor_id=hv_id, kind="vdi"))
    page = (await admin.get(f"/hypervisors/{hv_id}/remove")).text
    assert "cannot be removed while virtual machines are registered" in page and "desk-01" in page
    assert 'id="remove-confirm"' not in page
    response = await admin.post(f"/hypervisors/{hv_id}/remove")
    assert response.status_code == 409
    assert "sim1 still has 1 virtual machine(s) registered: desk-01" in response.text
    api = await admin.http.delete(f"{API}/{hv_id}", headers={"X-CSRF-Token": admin.csrf or ""})
    assert api.status_code == 409
    assert api.json()["error"] == "hypervisor_in_use" and api.json()["vms"] == ["desk-01"]
    assert len((await admin.get(API)).json()["hypervisors"]) == 1
    assert len(await dashboard.services.audit.recent(action="hypervisor_remove_refused")) == 2


async def test_domains_merely_found_on_a_hypervisor_do_not_block_its_removal(
    dashboard: RunningDashboard,
) -> None:
    admin = await dashboard.admin()
    hv_id = await _add(admin)
    await dashboard.services.db.execute(
        vms.insert().values(name="found-there", hypervisor_id=hv_id, kind="unclassified")
    )
    page = (await admin.get(f"/hypervisors/{hv_id}/remove")).text
    assert 'id="remove-confirm"' in page
    response = await admin.post(f"/hypervisors/{hv_id}/remove")
    assert response.status_code == 303
    assert (await admin.get(API)).json()["hypervisors"] == []
    left = await dashboard.services.db.fetch_all(vms.select().where(vms.c.hypervisor_id == hv_id))
    assert left == [], "the unclassified mirror rows go with their hypervisor"


async def test_unknown_hypervisors_are_404(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    for path in ["/hypervisors/999/edit", "/hypervisors/999/remove", "/hypervisors/999/host-key"]:
        response = await admin.get(path)
        assert response.status_code == 404 and "no such hypervisor" in response.text, path
    response = await admin.get(f"{API}/999")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


async def test_the_json_api_creates_reads_updates_and_deletes(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    created = await admin.post(API, json={"name": "api-hv", "transport": "test", "maintenance": True})
    assert created.status_code == 201
    record = created.json()
    assert created.headers["location"] == f"{API}/{record['id']}"
    assert (record["name"], record["maintenance"], record["images_dir"]) == (
        "api-hv",
        True,
        "/var/lib/kvm-vdi/images",
    )

    fetched = (await admin.get(f"{API}/{record['id']}")).json()
    assert fetched == record

    patched = await admin.http.patch(
        f"{API}/{record['id']}",
        json={"maintenance": False, "spice_address": "spice.example.org"},
        headers={"X-CSRF-Token": admin.csrf or ""},
    )
    assert patched.status_code == 200
    assert (patched.json()["maintenance"], patched.json()["spice_address"]) == (False, "spice.example.org")
    assert patched.json()["name"] == "api-hv", "PATCH keeps what it does not name"

    deleted = await admin.http.delete(f"{API}/{record['id']}", headers={"X-CSRF-Token": admin.csrf or ""})
    assert deleted.status_code == 204
    assert (await admin.get(API)).json() == {"hypervisors": []}


@pytest.mark.parametrize(
    ("body", "field", "label"),
    [
        ({"name": "", "transport": "test"}, "name", "Name:"),
        ({"name": "x", "transport": "carrier-pigeon"}, "transport", "Transport:"),
        ({"name": "x", "transport": "ssh", "address": "a b"}, "address", "SSH address:"),
        ({"name": "x", "transport": "test", "ssh_port": "http"}, "ssh_port", "SSH port:"),
        ({"name": "x", "transport": "test", "colour": "blue"}, "colour", "colour:"),
    ],
)
async def test_the_json_api_reports_errors_by_field(
    dashboard: RunningDashboard, body: dict[str, Any], field: str, label: str
) -> None:
    admin = await dashboard.admin()
    response = await admin.post(API, json=body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "invalid"
    assert field in answer["fields"]
    assert answer["fields"][field].startswith(label), "the message names the field"
    assert label in answer["message"]
    assert (await admin.get(API)).json()["hypervisors"] == []


async def test_the_json_api_refuses_a_body_that_is_not_an_object(dashboard: RunningDashboard) -> None:
    admin = await dashboard.admin()
    for content in [b"[1, 2]", b"{not json"]:
        response = await admin.http.post(
            API,
            content=content,
            headers={"X-CSRF-Token": admin.csrf or "", "Content-Type": "application/json"},
        )
        assert response.status_code == 400 and response.json()["error"] == "invalid_json"
