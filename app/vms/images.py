"""``ImageService``: golden image versions as the handlers and the broker use them.

Publish a version (:mod:`app.vms.publish`), move VDI machines onto the target
(:mod:`app.vms.rollout`), choose the target and delete unused versions
(:mod:`app.vms.versions_admin`). Every change is announced on the live topic
``image`` with the initial's whole picture (:meth:`ImageState.summary`).
"""

from __future__ import annotations

from app.i18n import gettext as _
from app.vms import publish, publish_running, rollout, versions_admin
from app.vms.context import VmContext
from app.vms.errors import Invalid
from app.vms.records import Vm
from app.vms.versions import ImageState


class ImageService:
    def __init__(self, ctx: VmContext) -> None:
        self.ctx = ctx

    async def state(self, initial_id: int) -> ImageState:
        state = await publish.state_of(self.ctx, initial_id)
        if state.initial.kind != "initial":
            raise Invalid({"vm": _("{name} is not an initial machine").format(name=state.initial.name)})
        return state

    async def publish(
        self,
        initial_id: int,
        *,
        origin: str = "source",
        shutdown: bool = False,
        note: str = "",
        actor: str = "",
    ) -> int:
        """Publish version N+1 from the source's disk or the initial's own (an operation; its id)."""
        return await publish.start_publish(
            self.ctx, initial_id, origin=origin, shutdown=shutdown, note=note.strip(), actor=actor
        )

    async def publish_running(self, initial_id: int, *, note: str = "", actor: str = "") -> int:
        """Publish version N+1 from the running initial's disk, which keeps running (an operation)."""
        return await publish_running.start_publish_running(
            self.ctx, initial_id, note=note.strip(), actor=actor
        )

    async def rollout(self, initial_id: int, *, actor: str = "") -> int:
        """Move every idle VDI machine behind the target onto it now (an operation)."""
        return await rollout.start_rollout(self.ctx, initial_id, actor=actor)

    async def set_target(self, initial_id: int, version_id: int, *, actor: str = "") -> ImageState:
        return await versions_admin.set_target(self.ctx, initial_id, version_id, actor=actor)

    async def roll_back(self, initial_id: int, *, actor: str = "") -> ImageState:
        return await versions_admin.roll_back(self.ctx, initial_id, actor=actor)

    async def plan_delete(self, initial_id: int, version_id: int) -> versions_admin.VersionDeletePlan:
        return await versions_admin.plan_version_delete(self.ctx, initial_id, version_id)

    async def delete(
        self,
        initial_id: int,
        version_id: int,
        *,
        confirmed_files: list[str] | None,
        actor: str = "",
        client_address: str = "",
    ) -> versions_admin.VersionDeletePlan:
        return await versions_admin.delete_version(
            self.ctx,
            initial_id,
            version_id,
            confirmed_files=confirmed_files,
            actor=actor,
            client_address=client_address,
        )

    async def move_desktop(self, vm_id: int, *, actor: str = "") -> bool:
        """A desktop nobody uses moves to its initial's target if behind (the broker, on return)."""
        return await rollout.move_desktop(self.ctx, vm_id, actor=actor)

    async def clear_for_start(self, initial: Vm, confirmed: list[str] | None, *, actor: str = "") -> None:
        await versions_admin.clear_for_start(self.ctx, initial, confirmed, actor=actor)
