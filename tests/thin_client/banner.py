"""Recognising the banner guest's screen in a screenshot of the thin client's display.

remote-viewer scales the guest's 720x400 text screen to the display, so the
check looks for the guest's pattern rather than exact coordinates: a row on
which all 16 palette colours of the guest's stripe appear in order, left to
right, each as a run of pixels, and the guest's blue background covering most
of the screen.
"""

from __future__ import annotations

from tests.services import guests
from tests.services.guests import Screen

TOLERANCE = 24


def _close(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return all(abs(x - y) <= TOLERANCE for x, y in zip(a, b, strict=True))


def row_runs(screen: Screen, y: int, min_run: int) -> list[tuple[int, int, int]]:
    """Colours of the runs of at least ``min_run`` similar pixels along row ``y``."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for x in range(1, screen.width + 1):
        if x == screen.width or not _close(screen.pixel(x, y), screen.pixel(start, y)):
            if x - start >= min_run:
                runs.append(screen.pixel(start + (x - start) // 2, y))
            start = x
    return runs


def has_palette_stripe(screen: Screen) -> bool:
    min_run = guests.STRIPE_WIDTH // 2
    for y in range(0, screen.height // 2, 2):
        runs = row_runs(screen, y, min_run)
        wanted = iter(guests.PALETTE)
        colour: tuple[int, int, int] | None = next(wanted)
        for seen in runs:
            if colour is not None and _close(seen, colour):
                colour = next(wanted, None)
                if colour is None:
                    return True
    return False


def shows_banner_guest(screen: Screen) -> bool:
    return screen.fraction(guests.BLUE, tolerance=TOLERANCE) >= 0.5 and has_palette_stripe(screen)
