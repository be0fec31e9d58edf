"""A network namespace joined to the root namespace by one veth pair.

The root side gets ``.1`` and the namespace side ``.2`` of a /30 inside
10.251.0.0/16, picked from a hash of the run id and the namespace's role, and
skipped if any address or route of the machine already touches it. After set-up
``ip route get`` must show the route through our veth, or the namespace is torn
down again: the tests must never send traffic anywhere else.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from types import TracebackType

from .process import ServiceError, run
from .rundir import RunDir

POOL = ipaddress.IPv4Network("10.251.0.0/16")


def _subnet_in_use(subnet: ipaddress.IPv4Network) -> bool:
    for entry in json.loads(run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]"):
        for info in entry.get("addr_info", []):
            iface = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
            if iface.network.overlaps(subnet):
                return True
    for route in json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]"):
        dst = route.get("dst", "")
        if dst in ("", "default"):
            continue
        try:
            if ipaddress.ip_network(dst, strict=False).overlaps(subnet):
                return True
        except ValueError:
            continue
    return False


class NetNamespace:
    """``ip netns`` namespace ``kvmvdi-<run>-<role>`` with a /30 link to the root namespace."""

    def __init__(self, run_dir: RunDir, role: str) -> None:
        self.run_dir = run_dir
        self.role = role
        self.name = f"kvmvdi-{run_dir.id}-{role}"
        # interface names are limited to 15 characters
        self.root_link = f"kv{run_dir.id}{role}"[:15]
        self.subnet: ipaddress.IPv4Network | None = None
        self.root_address = ""
        self.address = ""  # the namespace's own address

    def start(self) -> NetNamespace:
        self.subnet = self._pick_subnet()
        hosts = list(self.subnet.hosts())
        self.root_address, self.address = str(hosts[0]), str(hosts[1])
        prefix = self.subnet.prefixlen
        self.run_dir.record("netns", self.name)
        run(["ip", "netns", "add", self.name])
        self.run_dir.record("links", self.root_link)
        run(["ip", "link", "add", self.root_link, "type", "veth", "peer", "name", "eth0", "netns", self.name])
        run(["ip", "addr", "add", f"{self.root_address}/{prefix}", "dev", self.root_link])
        run(["ip", "link", "set", self.root_link, "up"])
        run(["ip", "-n", self.name, "addr", "add", f"{self.address}/{prefix}", "dev", "eth0"])
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        run(["ip", "-n", self.name, "link", "set", "eth0", "up"])
        route = json.loads(run(["ip", "-j", "route", "get", self.address]).stdout)
        if not route or route[0].get("dev") != self.root_link:
            self.stop()
            raise ServiceError(f"{self.address} does not route through {self.root_link}: {route}")
        return self

    def _pick_subnet(self) -> ipaddress.IPv4Network:
        subnets = POOL.num_addresses // 4
        digest = hashlib.sha256(f"{self.run_dir.id}/{self.role}".encode()).digest()
        first = int.from_bytes(digest[:4], "big") % subnets
        for step in range(64):
            base = POOL.network_address + 4 * ((first + step) % subnets)
            subnet = ipaddress.IPv4Network(f"{base}/30")
            if not _subnet_in_use(subnet):
                return subnet
        raise ServiceError("no free /30 in 10.251.0.0/16")

    def cut(self) -> None:
        """The namespace's link goes down (a pulled cable): nothing passes until :meth:`mend`.

        Only the namespace's end goes down; the root end stays up without a carrier, so the
        route to the namespace stays where it is and nothing is sent anywhere else meanwhile.
        """
        run(["ip", "-n", self.name, "link", "set", "eth0", "down"])
        self._check_route()

    def mend(self) -> None:
        run(["ip", "-n", self.name, "link", "set", "eth0", "up"])
        self._check_route()

    def _check_route(self) -> None:
        route = json.loads(run(["ip", "-j", "route", "get", self.address]).stdout)
        if not route or route[0].get("dev") != self.root_link:
            raise ServiceError(f"{self.address} no longer routes through {self.root_link}: {route}")

    def exec_prefix(self) -> list[str]:
        """argv prefix that runs a command inside this namespace."""
        return ["ip", "netns", "exec", self.name]

    def stop(self) -> None:
        # Deleting the root end deletes its peer; the namespace goes when its last process does.
        run(["ip", "link", "del", self.root_link], check=False)
        run(["ip", "netns", "del", self.name], check=False)
        self.run_dir.forget("links", self.root_link)
        self.run_dir.forget("netns", self.name)

    def __enter__(self) -> NetNamespace:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
