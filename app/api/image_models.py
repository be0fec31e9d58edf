"""The answers about golden image versions, snapshots and the usage report: the admin API's,
the portal's and the broker API's (built from the domain's summaries and validated on the way)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, RootModel

from app.api.errors import ErrorBody
from app.api.out import Out

# --- golden image versions ------------------------------------------------------------------------


class VersionOut(Out):
    id: int
    number: int
    label: str = Field(description="v1, v2 ...")
    path: str = Field(description="the version's disk on the hypervisor")
    origin: str = Field(description="what it was published from: source or initial")
    origin_name: str
    size_bytes: int | None
    note: str
    created_by: str
    created_at: str | None = Field(description="ISO 8601, UTC")


class ImageVersionOut(VersionOut):
    target: bool = Field(description="the version desktops move to")
    children: list[str] = Field(description="the VDI machines running on it")


class WorkingDisk(Out):
    path: str = Field(description="the initial machine's own disk, where the next version is prepared")
    version: str | None = Field(description="the version it was made from")
    children_depend: list[str] = Field(description="VDI machines whose overlays still read it")


class ImageChild(Out):
    id: int
    name: str
    state: str
    version_id: int | None
    version: str | None
    behind: bool = Field(description="not on the target version yet")
    held_by_user: bool = Field(description="held by a user: it moves when given back")
    operation_id: int | None


class Rollout(Out):
    on_target: int
    total: int


class ImageSummary(Out):
    initial_id: int
    initial: str
    target_version_id: int | None
    target: str | None
    working_disk: WorkingDisk
    versions: list[ImageVersionOut]
    children: list[ImageChild]
    rollout: Rollout


class ImageAnswer(Out):
    """The initial machine's image versions, its VDI machines and the roll-out's progress."""

    image: ImageSummary


class RecreatedDisk(Out):
    path: str
    recreated_on: str = Field(description="the version it is made from again")


class VersionDeletePlanOut(Out):
    version: VersionOut
    files: list[str] = Field(description="the files deleted")
    working_disk: RecreatedDisk | None = Field(
        description="the initial's disk, when it was based on the version"
    )


class VersionPlanAnswer(Out):
    """What deleting the version removes, to confirm (send its files as confirm_files)."""

    plan: VersionDeletePlanOut


class VersionDeleted(Out):
    """The version is gone: the plan that was carried out."""

    deleted: VersionDeletePlanOut


# --- snapshots ------------------------------------------------------------------------------------


class SnapshotOut(Out):
    name: str
    description: str
    created_at: str = Field(description="ISO 8601, UTC")
    state: str = Field(description="the domain's state when it was taken: running (memory kept) or shutoff")
    with_memory: bool
    current: bool = Field(description="the snapshot the desktop last went back to or took")
    parent: str | None


class SnapshotList(Out):
    """The VM's snapshots, oldest first."""

    snapshots: list[SnapshotOut]


class UserSnapshotList(Out):
    """The snapshots of the user's own desktop, and how many the pool lets them keep."""

    limit: int
    snapshots: list[SnapshotOut]


class SnapshotOutcome(Out):
    """Done (200), or still running when the answer was due (202); the fresh list either way."""

    state: Literal["succeeded", "running"]
    message: str
    snapshots: list[SnapshotOut]


class SnapshotFailed(Out):
    error: Literal["snapshot_failed"]
    state: Literal["failed"]
    message: str
    snapshots: list[SnapshotOut]


class SnapshotRefusal(RootModel[SnapshotFailed | ErrorBody]):
    """The snapshot failed (its list beside it), or was refused (the one error model)."""


# --- the usage report -----------------------------------------------------------------------------


class UsageDayOut(Out):
    day: str = Field(description="the day, local to time_zone (YYYY-MM-DD)")
    pool_id: int
    pool: str
    peak_desktops: int = Field(description="most desktops held at once")
    desktops_handed_out: int
    hours_used: float = Field(description="hours desktops were held")
    console_sessions: int
    console_hours: float
    refusals: int = Field(description="requests refused for want of a free desktop")


class UsageOut(Out):
    """Usage per pool and day, every day of every pool (zeros included)."""

    first: str
    last: str
    time_zone: str
    columns: list[str] = Field(description="the CSV's columns, in order")
    days: list[UsageDayOut]
