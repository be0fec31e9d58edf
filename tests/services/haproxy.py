"""HAProxy in front of the test cluster, run from the project's own ``deploy/haproxy.cfg``.

The harness keeps every section, balancing rule, health check, retry and timeout of
the deployment file and changes only what cannot be the same on a test machine:

* ``global``: no chroot, user switch, daemon mode or syslog; the stats socket in the run dir;
  ``maxconn`` within the file descriptors a test process may open;
* each ``bind`` becomes one loopback port of this run (TLS is not terminated: the
  ``:80`` listener and its redirect to https go);
* each backend's ``server`` lines are replaced by the servers the test names, the i-th
  with the options of the file's i-th server line (``port N`` becomes the server's check port).

Runtime changes (a server put in maintenance, its state) go through the stats socket.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import report
from .ports import allocate_port, release_port
from .process import ServiceError, run, spawn, stop_process, wait_until
from .rundir import RunDir

REPO = Path(__file__).resolve().parents[2]
DEPLOY_CONFIG = REPO / "deploy" / "haproxy.cfg"
TEST_MAXCONN = 4000
_DROPPED_GLOBAL = ("log ", "chroot ", "user ", "group ", "daemon", "stats socket ")


@dataclass(frozen=True)
class Server:
    name: str
    host: str
    port: int
    # The port health checks go to, when not ``port`` (the gateway is checked on its HTTP port).
    check_port: int | None = None


def render(
    template: str, *, binds: Mapping[str, int], servers: Mapping[str, Sequence[Server]], stats: Path
) -> str:
    """The deployment file with this run's listeners, servers and stats socket."""
    out: list[str] = []
    section = ""
    name = ""
    # Options of each backend's server lines, in order; placed once the backend's lines end.
    server_options: dict[str, list[list[str]]] = {}
    placed: set[str] = set()
    for line in template.splitlines():
        stripped = line.strip()
        if line and not line[0].isspace():
            section, _, name = stripped.partition(" ")
            name = name.strip()
            out.append(line)
            if section == "global":
                out.append(f"    stats socket {stats} mode 600 level admin")
            continue
        if section == "global" and stripped.startswith(_DROPPED_GLOBAL):
            continue
        if section == "global" and stripped.startswith("maxconn "):
            out.append(f"    maxconn {TEST_MAXCONN}")
            continue
        if section == "defaults" and stripped == "log global":
            continue
        if stripped.startswith("bind "):
            if name not in binds:
                raise ServiceError(f"haproxy: no port given for {section} {name}")
            if ":80" in stripped.split() or stripped.endswith(":80"):
                continue
            out.append(f"    bind 127.0.0.1:{binds[name]}")
            continue
        if stripped.startswith("http-request redirect scheme https"):
            continue
        if stripped.startswith("server "):
            server_options.setdefault(name, []).append(stripped.split()[3:])
            continue
        if server_options.get(name) and name not in placed:
            placed.add(name)
            out += _server_lines(servers.get(name, ()), server_options[name])
        out.append(line)
    if name in server_options and name not in placed:
        out += _server_lines(servers.get(name, ()), server_options[name])
        placed.add(name)
        out.append(line)
    missing = set(servers) - placed
    if missing:
        raise ServiceError(f"haproxy: no backend named {', '.join(sorted(missing))} in the template")
    return "\n".join(out) + "\n"


def _server_lines(servers: Sequence[Server], options: Sequence[Sequence[str]]) -> list[str]:
    """The test's servers, the i-th with the options of the file's i-th server line (or its last)."""
    return [
        f"    server {server.name} {server.host}:{server.port} "
        + _options(options[min(index, len(options) - 1)], server)
        for index, server in enumerate(servers)
    ]


def _options(words: Sequence[str], server: Server) -> str:
    result: list[str] = []
    skip = False
    for index, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word == "port" and index + 1 < len(words):
            result += ["port", str(server.check_port or server.port)]
            skip = True
            continue
        result.append(word)
    return " ".join(result)


class HAProxy:
    def __init__(
        self,
        run_dir: RunDir,
        *,
        servers: Mapping[str, Sequence[Server]],
        frontends: Sequence[str] = ("kvmvdi_http", "kvmvdi_gateway", "kvmvdi_db", "stats"),
        name: str = "haproxy",
        template: Path = DEPLOY_CONFIG,
    ) -> None:
        self.run_dir = run_dir
        self.dir: Path = run_dir.path / name
        self.servers = dict(servers)
        self.frontends = tuple(frontends)
        self.template = template
        self.ports: dict[str, int] = {}
        self.config_path = self.dir / "haproxy.cfg"
        self.stats_socket = self.dir / "admin.sock"
        self.log_path = self.dir / "haproxy.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, frontend: str = "kvmvdi_http") -> str:
        return f"http://127.0.0.1:{self.ports[frontend]}"

    def port(self, frontend: str) -> int:
        return self.ports[frontend]

    def start(self) -> HAProxy:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports = {frontend: allocate_port() for frontend in self.frontends}
        self.config_path.write_text(
            render(self.template.read_text(), binds=self.ports, servers=self.servers, stats=self.stats_socket)
        )
        run(["haproxy", "-c", "-q", "-f", str(self.config_path)])
        self._proc = spawn(
            ["haproxy", "-f", str(self.config_path), "-db"], run_id=self.run_dir.id, log_path=self.log_path
        )
        wait_until(self._listening, what="haproxy", timeout=30, log_path=self.log_path, proc=self._proc)
        report.note("haproxy", f"started haproxy with {', '.join(self.ports)}", time.monotonic() - started)
        return self

    def _listening(self) -> bool:
        for port in self.ports.values():
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        return True

    def command(self, line: str) -> str:
        """One command on the stats socket (``show servers state``, ``set server b/s state maint`` ...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self, backend: str) -> dict[str, str]:
        """``{server: "UP" | "DOWN" | "MAINT" | "DRAIN" ...}`` as HAProxy sees them now."""
        states: dict[str, str] = {}
        for line in self.command("show stat").splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[0] == backend and fields[1] not in ("FRONTEND", "BACKEND"):
                states[fields[1]] = fields[17].split(" ")[0]
        return states

    def wait_states(self, backend: str, expected: Mapping[str, str], *, timeout: float = 30) -> None:
        wait_until(
            lambda: all(self.server_states(backend).get(k) == v for k, v in expected.items()),
            what=f"haproxy {backend} servers {dict(expected)}",
            timeout=timeout,
        )

    def stop(self) -> None:
        stop_process(self._proc, timeout=10)
        self._proc = None
        for port in self.ports.values():
            release_port(port)
        self.ports = {}
