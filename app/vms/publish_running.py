"""Publishing a new version from a running initial machine (operation ``publish``, ``running``).

An admin edits the golden image by running the initial machine (installing updates)
and publishes version N+1 from it while it runs. The copy is libvirt's point-in-time
backup of the running disk (:mod:`app.hyper.backup`): the disk as it was when the
copy began, flattened into a standalone qcow2, while the guest runs on and is never
stopped or paused (its file systems are frozen for an instant when its guest agent
answers). The version's note says which: *filesystem-consistent* (frozen through
the agent) or *crash-consistent* (as after a power cut).

As with every publication, the copy goes to a temporary name recorded in the
operation before anything is written, and is renamed at the end; a failed or
cancelled copy stops the backup job and removes the file, and a dashboard that
stops mid-way leaves no version and no file. A backup job that outlived a crash is
stopped by the next running publication before it begins. The initial's working
disk is left as it is (it is in use): it stays an overlay of the version it was
made on, and the next publication flattens it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath

from app.hyper import HypervisorError
from app.i18n import gettext as _
from app.i18n import ngettext
from app.i18n.messages import M_
from app.vms.context import VmContext
from app.vms.disks import confined, existing_files, image_info, no_space
from app.vms.errors import HypervisorFailure, Invalid, Refused
from app.vms.operations import OperationContext
from app.vms.power import live_state
from app.vms.publish import Publication, initial_checks, new_version_file, state_of

log = logging.getLogger("kvmvdi.vms.publish")

# How often the backup job's progress is read, and how long a stopped job may take to end.
POLL_SECONDS = 0.5
ABORT_SECONDS = 60.0
FROZEN = "filesystem-consistent copy of the running machine (file systems frozen by its guest agent)"
CRASH = "crash-consistent copy of the running machine (no guest agent answered: as after a power cut)"
# The admin's note and the consistency note share the version's 255 characters.
NOTE_ROOM = 255 - max(len(FROZEN), len(CRASH)) - 3


async def start_publish_running(ctx: VmContext, initial_id: int, *, note: str = "", actor: str = "") -> int:
    """Publish version N+1 from the running initial's disk without stopping it (an operation); its id."""
    if len(note) > NOTE_ROOM:
        raise Invalid(
            {
                "note": _("keep the note under {count} characters when publishing a running machine").format(
                    count=NOTE_ROOM + 1
                )
            }
        )
    initial = await ctx.vm(initial_id)
    initial_checks(initial, _("publish a new version"))
    hv = ctx.hypervisor(initial.hypervisor_id)
    if await live_state(hv, initial) != "running":
        raise Refused(
            _("{name} is not running: publish from its disk instead").format(name=initial.name),
            code="not_running",
        )
    state = await state_of(ctx, initial.id)
    if dependents := state.dependents():
        raise Refused(
            ngettext(
                "{count} VDI machine runs on the disk of {name} itself: shut {name} down and publish"
                " from its disk, which moves its working disk off it",
                "{count} VDI machines run on the disk of {name} itself: shut {name} down and publish"
                " from its disk, which moves its working disk off it",
                len(dependents),
            ).format(count=len(dependents), name=initial.name),
            code="children_depend",
        )
    confined(hv, [initial.disk_path])
    if not initial.disk_path or not await existing_files(hv, [initial.disk_path]):
        raise Refused(
            _("there is no disk at {path} to publish").format(path=initial.disk_path or "(none)"),
            code="no_disk",
        )
    number = state.next_number
    target = await new_version_file(hv, state)
    working = state.version(initial.image_version_id)

    async def work(op: OperationContext) -> str:
        publication = RunningPublication(ctx, op, hv, state, copy_from=initial.disk_path, target=target)
        version = await publication.run(origin="initial", origin_name=initial.name, note=note, actor=actor)
        kept = f", still an overlay of {working.label}" if working is not None else ""
        moving = len(state.children)
        follow = (
            f" Its {moving} VDI machines move to it when reset or returned; or roll the idle ones now."
            if moving
            else ""
        )
        return (
            f"Published {version.label} of {initial.name} from its running disk"
            f" ({publication.consistency}). {initial.name} kept running on its working disk{kept}.{follow}"
        )

    op_id = await ctx.operations.start(
        "publish",
        work,
        vm_id=initial.id,
        hypervisor_id=hv.id,
        params={
            "origin": "initial",
            "running": True,
            "from": initial.disk_path,
            "version": number,
            "path": target,
        },
        created_by=actor,
        message=M_("Publishing v{number} of the running {name}", number=str(number), name=initial.name),
    )
    await ctx.audit.record(
        "image_publish",
        actor=actor,
        target=initial.name,
        origin="initial",
        source=initial.name,
        version=number,
        running=True,
    )
    return op_id


class RunningPublication(Publication):
    renews_working_disk = False
    consistency = ""

    async def copy(self, number: int, tag: str, temp: str, note: str) -> str:
        op, hv, name = self.op, self.hv, self.state.initial.name
        await self._stop_leftover_job()
        size = int((await image_info(hv, self.copy_from))["virtual-size"])
        await hv.create_blank(temp, size)
        try:
            frozen = await hv.begin_backup(name, self.copy_from, temp)
        except HypervisorError as exc:
            raise HypervisorFailure(
                _("the copy of the running disk of {name} could not begin: {reason}").format(
                    name=name, reason=exc
                )
            ) from exc
        self.consistency = FROZEN if frozen else CRASH
        await op.progress(
            1,
            M_(
                "Copying the running disk of {name} to v{number} ({consistency})",
                name=name,
                number=str(number),
                consistency=self.consistency,
            ),
        )
        try:
            await self._follow(number)
        except BaseException:
            # Cancelled (the dashboard stops) or failed: the job must not write on into the
            # temporary file the operation removes next.
            await asyncio.shield(self._stop())
            raise
        outcome = await hv.backup_outcome(name)
        if outcome != "completed":
            what = f"copying the running disk of {name} to v{number}"
            failure = HypervisorError(_("the backup job ended: {outcome}").format(outcome=outcome))
            if (full := await no_space(hv, failure, posixpath.dirname(self.target), what)) is not None:
                raise full
            raise HypervisorFailure(
                _("the copy of the running disk of {name} ended: {outcome}").format(
                    name=name, outcome=outcome
                )
            )
        await hv.rename_file(temp, self.target)
        return f"{note} ({self.consistency})" if note else self.consistency

    async def _stop_leftover_job(self) -> None:
        """A backup job a publication interrupted by a crash left running is stopped; anyone
        else's (an admin's backup tool) is waited for, not broken."""
        name = self.state.initial.name
        targets = await self.hv.backup_targets(name)
        if not targets:
            return
        ours = posixpath.join(posixpath.dirname(self.target), f"{name}.v")
        if not all(path.startswith(ours) and ".part-op" in path for path in targets):
            raise Refused(
                _("another backup job runs on {name} (writing {paths}): publish when it has ended").format(
                    name=name, paths=", ".join(targets)
                ),
                code="busy",
            )
        log.warning("%s: stopping the backup job an interrupted publication left running", name)
        if await self.hv.abort_backup(name):
            await self._ended()

    async def _follow(self, number: int) -> None:
        """Report the backup job's progress (libvirt's job info, read every half second) until it ends."""
        while True:
            job = await self.hv.backup_job(self.state.initial.name)
            if not job.active:
                return
            await self.op.progress(
                1 + 0.97 * job.percent,
                M_(
                    "Copying the running disk: {percent} % to v{number}",
                    percent=round(job.percent),
                    number=str(number),
                ),
            )
            await asyncio.sleep(POLL_SECONDS)

    async def _ended(self) -> None:
        """Wait (boundedly) for a stopped backup job to be over."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ABORT_SECONDS
        while loop.time() < deadline:
            if not (await self.hv.backup_job(self.state.initial.name)).active:
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _stop(self) -> None:
        name = self.state.initial.name
        with contextlib.suppress(Exception):
            if await self.hv.abort_backup(name):
                await self._ended()
            return
        log.warning("%s: the backup job could not be stopped; its temporary file is removed regardless", name)
