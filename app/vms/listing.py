"""The VM table at fleet size: search, filters, sorting, collapsed initials and paging.

A :class:`Listing` is what the admin asked to see (from the page's query string);
:func:`arrange` lays the table's rows out for one page: sections (an initial machine
with its VDI machines, then the source, simple and unclassified VMs), each row
matching every filter. The table keeps its shape while filtered: a VDI machine that
matches is shown under its initial machine, named as context when the initial
itself does not match. An initial machine the admin collapsed shows without its
children (and says how many it hides) until a filter is in force, which shows
every matching child. Paging counts VM rows; a section cut by a page boundary is
named again at the top of the next page.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from app.i18n import N_
from app.i18n import gettext as _
from app.vms.table import VmRow, VmTable

# What the state filter offers, and the domain states each choice covers.
STATES: dict[str, tuple[str, ...]] = {
    "running": ("running",),
    "stopped": ("shutoff",),
    "crashed": ("crashed",),
    "paused": ("paused", "pmsuspended"),
    "missing": ("missing",),
    "unknown": ("unknown",),
}
FLAGS = ("maintenance", "locked", "volatile", "in_use", "free", "busy")
KINDS = ("initial", "vdi", "source", "simple", "unclassified")
SORTS = ("name", "state", "hypervisor", "pool", "user")
PAGE_SIZES = (50, 100, 250, 500)
DEFAULT_PAGE_SIZE = 100
DENSITIES = ("compact", "comfortable")
# Sort order of states: what needs a look first.
STATE_ORDER = {
    "crashed": 0,
    "missing": 1,
    "unknown": 2,
    "paused": 3,
    "pmsuspended": 3,
    "running": 4,
    "shutoff": 5,
}
MAX_QUERY = 200
# The filters' choices as the toolbar offers them: (value, label), labels translated where shown.
FILTER_CHOICES: dict[str, tuple[tuple[str, str], ...]] = {
    "state": (
        ("running", N_("Running")),
        ("stopped", N_("Shut off")),
        ("crashed", N_("Crashed")),
        ("paused", N_("Paused or suspended")),
        ("missing", N_("Not defined")),
        ("unknown", N_("Unknown")),
    ),
    "flag": (
        ("in_use", N_("In use")),
        ("free", N_("Free (pooled, nobody on it)")),
        ("maintenance", N_("In maintenance")),
        ("locked", N_("Locked")),
        ("volatile", N_("Volatile")),
        ("busy", N_("Busy (an operation runs)")),
    ),
    "kind": (
        ("initial", N_("Initial machines")),
        ("vdi", N_("VDI machines")),
        ("source", N_("Source VMs")),
        ("simple", N_("Simple VMs")),
        ("unclassified", N_("Unclassified")),
    ),
}


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 19 else None


@dataclass(frozen=True)
class Listing:
    """What the admin asked to see; unknown values are dropped, never an error."""

    q: str = ""
    state: str = ""
    pool: str = ""  # a pool id, "none" (in no pool), or "" (any)
    hypervisor: int | None = None
    user: str = ""  # part of a user name, "none" (nobody holds it) or "" (any)
    flag: str = ""
    kind: str = ""
    sort: str = "name"
    desc: bool = False
    page: int = 1

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> Listing:
        def choice(key: str, allowed: Collection[str]) -> str:
            value = params.get(key, "")
            return value if value in allowed else ""

        pool = params.get("pool", "")
        return cls(
            q=" ".join(params.get("q", "").split())[:MAX_QUERY],
            state=choice("state", STATES),
            pool=pool if pool == "none" or _int(pool) is not None else "",
            hypervisor=_int(params.get("hypervisor")),
            user=params.get("user", "").strip()[:MAX_QUERY],
            flag=choice("flag", FLAGS),
            kind=choice("kind", KINDS),
            sort=choice("sort", SORTS) or "name",
            desc=params.get("dir") == "desc",
            page=max(1, _int(params.get("page")) or 1),
        )

    @property
    def filtered(self) -> bool:
        """Some filter narrows the table (sorting and paging do not)."""
        return bool(
            self.q or self.state or self.pool or self.hypervisor or self.user or self.flag or self.kind
        )

    def params(self, **changes: Any) -> dict[str, str]:
        """The query parameters of this listing with ``changes``; defaults are left out."""
        values = replace(self, **changes)
        params = {
            "q": values.q,
            "state": values.state,
            "pool": values.pool,
            "hypervisor": str(values.hypervisor or ""),
            "user": values.user,
            "flag": values.flag,
            "kind": values.kind,
            "sort": "" if values.sort == "name" else values.sort,
            "dir": "desc" if values.desc else "",
            "page": "" if values.page == 1 else str(values.page),
        }
        return {key: value for key, value in params.items() if value}

    def link(self, **changes: Any) -> str:
        """``?...`` for this listing with ``changes`` (page links, sortable headers)."""
        query = urlencode(self.params(**changes))
        return f"?{query}" if query else "?"

    def sort_link(self, key: str) -> str:
        """A column header's link: sort by it, or reverse it when it is the sort already."""
        return self.link(sort=key, desc=not self.desc if self.sort == key else False, page=1)

    def aria_sort(self, key: str) -> str:
        if self.sort != key:
            return "none"
        return "descending" if self.desc else "ascending"

    def matches(self, row: VmRow) -> bool:
        vm = row.vm
        if self.state and vm.state not in STATES[self.state]:
            return False
        if self.kind and vm.kind != self.kind:
            return False
        if self.hypervisor is not None and vm.hypervisor_id != self.hypervisor:
            return False
        if self.pool == "none" and row.pool_id is not None:
            return False
        if self.pool and self.pool != "none" and str(row.pool_id) != self.pool:
            return False
        if self.user == "none" and row.user is not None:
            return False
        if self.user and self.user != "none" and self.user.lower() not in (row.user or "").lower():
            return False
        if self.flag and not _flagged(row, self.flag):
            return False
        if self.q:
            haystack = " ".join(filter(None, (vm.name, row.user, row.pool, row.hypervisor))).lower()
            return all(word in haystack for word in self.q.lower().split())
        return True


def _flagged(row: VmRow, flag: str) -> bool:
    vm = row.vm
    if flag == "in_use":
        return vm.assigned_user_id is not None
    if flag == "free":
        return vm.assigned_user_id is None and row.pool_id is not None
    if flag == "busy":
        return vm.operation_id is not None
    return bool(getattr(vm, flag))


def _natural(name: str) -> tuple[Any, ...]:
    """desk-2 before desk-10."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name))


def sort_key(sort: str) -> Callable[[VmRow], tuple[Any, ...]]:
    def key(row: VmRow) -> tuple[Any, ...]:
        name = _natural(row.vm.name)
        if sort == "state":
            return (STATE_ORDER.get(row.vm.state, 2), row.vm.state, name)
        if sort == "hypervisor":
            return (_natural(row.hypervisor), name)
        if sort == "pool":
            return (row.pool is None, _natural(row.pool or ""), name)
        if sort == "user":
            return (row.user is None, (row.user or "").lower(), name)
        return (name,)

    return key


@dataclass
class Section:
    """One ``<tbody>`` of a page: an initial machine's, or the source / simple / unclassified VMs'."""

    key: str
    title: str
    # The initial machine heading its section (None for the kind groups).
    lead: VmRow | None = None
    # The lead is a row of this page (it matches, and its place is here); else it is named as context.
    lead_shown: bool = False
    rows: list[VmRow] = field(default_factory=list)
    # Children not shown because the admin collapsed this initial (and no filter is in force).
    hidden: int = 0
    collapsed: bool = False
    # The section began on an earlier page.
    continued: bool = False


@dataclass
class Page:
    listing: Listing
    sections: list[Section]
    total: int  # every VM
    matching: int  # those that match the filters (children of collapsed initials included)
    number: int
    pages: int
    per_page: int
    first: int  # 1-based position of the page's first row among the rows shown, 0 when empty
    last: int

    @property
    def row_ids(self) -> list[int]:
        ids = [s.lead.vm.id for s in self.sections if s.lead is not None and s.lead_shown]
        return ids + [row.vm.id for section in self.sections for row in section.rows]

    def numbers(self) -> list[int | None]:
        """Page numbers for the pager: the first, the last and those around this one (None: a gap)."""
        wanted = sorted(
            {1, self.pages, *range(self.number - 2, self.number + 3)} & set(range(1, self.pages + 1))
        )
        shown: list[int | None] = []
        for number in wanted:
            if shown and shown[-1] is not None and number - shown[-1] > 1:
                shown.append(None)
            shown.append(number)
        return shown


# One entry per row in display order: (section key, the row, whether it is a section's lead).
_Entry = tuple[str, VmRow, bool]


def arrange(table: VmTable, listing: Listing, *, collapsed: Collection[int] = (), per_page: int) -> Page:
    """The rows of ``table`` that ``listing`` asks for, laid out for its page."""
    key = sort_key(listing.sort)
    order: Callable[[list[VmRow]], list[VmRow]] = lambda rows: sorted(  # noqa: E731
        rows, key=key, reverse=listing.desc
    )
    entries: list[_Entry] = []
    templates: dict[str, Section] = {}
    matching = 0
    for lead in order(table.initials):
        section_key = f"initial-{lead.vm.id}"
        lead_matches = listing.matches(lead)
        children = [child for child in lead.children if listing.matches(child)]
        matching += lead_matches + len(children)
        folded = lead.vm.id in collapsed and not listing.filtered
        if not lead_matches and not children:
            continue
        templates[section_key] = Section(
            section_key,
            lead.vm.name,
            lead=lead,
            hidden=len(children) if folded else 0,
            collapsed=lead.vm.id in collapsed,
        )
        if lead_matches:
            entries.append((section_key, lead, True))
        if not folded:
            entries.extend((section_key, child, False) for child in order(children))
    groups = (
        ("sources", _("Source VMs (golden images)"), table.sources),
        ("simple", _("Simple VMs"), table.simple),
        ("unclassified", _("Unclassified (found on a hypervisor; classify them)"), table.unclassified),
    )
    for section_key, title, rows in groups:
        shown = [row for row in rows if listing.matches(row)]
        matching += len(shown)
        if shown:
            templates[section_key] = Section(section_key, title)
            entries.extend((section_key, row, False) for row in order(shown))

    pages = max(1, math.ceil(len(entries) / per_page))
    number = min(listing.page, pages)
    start = (number - 1) * per_page
    on_page = entries[start : start + per_page]
    sections: list[Section] = []
    for section_key, row, is_lead in on_page:
        if not sections or sections[-1].key != section_key:
            template = templates[section_key]
            sections.append(
                replace(
                    template, rows=[], continued=not is_lead and _began_before(entries, start, section_key)
                )
            )
        if is_lead:
            sections[-1].lead_shown = True
        else:
            sections[-1].rows.append(row)
    return Page(
        listing=replace(listing, page=number),
        sections=sections,
        total=table.count,
        matching=matching,
        number=number,
        pages=pages,
        per_page=per_page,
        first=start + 1 if on_page else 0,
        last=start + len(on_page),
    )


def _began_before(entries: list[_Entry], start: int, section_key: str) -> bool:
    return start > 0 and entries[start - 1][0] == section_key


def rows_by_id(table: VmTable) -> dict[int, tuple[VmRow, bool]]:
    """Every row of the table by VM id, with whether it is a VDI machine shown under its initial."""
    found: dict[int, tuple[VmRow, bool]] = {}
    for lead in table.initials:
        found[lead.vm.id] = (lead, False)
        for child in lead.children:
            found[child.vm.id] = (child, True)
    for row in (*table.sources, *table.simple, *table.unclassified):
        found[row.vm.id] = (row, False)
    return found


def matching_ids(table: VmTable, listing: Listing) -> list[int]:
    """Every VM that matches the filters, on any page (bulk selection of "all matching")."""
    return [vm_id for vm_id, (row, _) in rows_by_id(table).items() if listing.matches(row)]
