"""Real services for the test suite: MariaDB, OpenSSH, isolated libvirt hypervisors,
OpenLDAP, Xvfb, headless Chromium and tiny boot-sector guests.

Plain Python with no dependency on ``app``: each module starts one real program
inside a private run directory (:mod:`.rundir`), on free loopback ports
(:mod:`.ports`), waits until it answers, and stops it again by PID. Everything a
run starts carries the run id in its environment so that teardown, and the reaper
of crashed runs, can find every last process.
"""

from .rundir import RunDir

__all__ = ["RunDir"]
