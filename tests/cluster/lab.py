"""A cluster of real dashboard replicas for the cluster tests and benchmarks.

Three ``kvm-vdi serve`` subprocesses (real processes: tests kill them with SIGKILL and
stop them with SIGTERM) share a 3-node Galera cluster, Redis, one SSH key pair and one
session secret, behind HAProxy running ``deploy/haproxy.cfg``. Replicas reach the
database through HAProxy's ``kvmvdi_db`` (one writer node, the others as backups),
browsers and the broker API through ``kvmvdi_http``, remote-viewer through
``kvmvdi_gateway``; tests may also talk to one replica directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

from app import db as database
from app.auth.accounts import create_local_user
from app.db.schema import hypervisors
from app.hyper.sshkeys import DashboardKey, ensure_dashboard_key
from app.tlsca import DashboardCA
from tests.dashboard import ADMIN_PASSWORD, REPO, BrowserLikeClient
from tests.hyper.conftest import row_values, ssh_record
from tests.services import report
from tests.services.galera import GaleraCluster
from tests.services.haproxy import HAProxy, Server
from tests.services.libvirt_host import LibvirtHost
from tests.services.ports import allocate_port, release_port
from tests.services.process import ServiceError, log_tail, spawn, stop_process, wait_until
from tests.services.redis import RedisServer
from tests.services.rundir import RunDir
from tests.webhook_receiver import WEBHOOK_SECRET, WebhookReceiver

REPLICAS = ("r1", "r2", "r3")
SESSION_SECRET = "cluster-test-session-secret-0123456789abcdef"
# Quick enough for tests, as a real deployment might be: heartbeat 0.5 s, a replica gone after 3 s.
CLUSTER_SETTINGS = {
    "heartbeat_interval": 0.5,
    "replica_timeout": 3.0,
    "drain_grace": 3.0,
    "drain_timeout": 20.0,
}
# Alerts of one key within this many seconds make one alert and one "and N more" after it.
ALERT_RATE_LIMIT = 5.0


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(str(value))


def render_config(values: dict[str, Any]) -> str:
    lines = [f"{key} = {_toml(value)}" for key, value in values.items() if not isinstance(value, dict)]
    for table, entries in values.items():
        if isinstance(entries, dict):
            lines.append(f"\n[{table}]")
            lines += [f"{key} = {_toml(value)}" for key, value in entries.items()]
    return "\n".join(lines) + "\n"


class Replica:
    def __init__(self, lab: ClusterLab, name: str) -> None:
        self.lab = lab
        self.name = name
        self.dir = lab.dir / name
        self.http_port = 0
        self.gateway_port = 0
        self.config_path = self.dir / "config.toml"
        self.log_path = self.dir / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra: dict[str, Any] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def allocate(self) -> None:
        self.http_port = allocate_port()
        self.gateway_port = allocate_port()

    def write_config(self) -> None:
        lab = self.lab
        self.dir.mkdir(parents=True, exist_ok=True)
        ssh = self.dir / "var" / "ssh"
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Every replica uses the same key pair (the hypervisors know one dashboard key) and the
        # same console CA (it certifies the hypervisors' SPICE servers).
        shutil.copy2(lab.ssh_key.private_path, ssh / "id_ed25519")
        ca = self.dir / "var" / "ca"
        shutil.rmtree(ca, ignore_errors=True)
        shutil.copytree(lab.dir / "ca", ca)
        values: dict[str, Any] = {
            "database_url": lab.database_url,
            "data_dir": str(self.dir / "var"),
            "assets_dir": str(REPO / "node_modules"),
            "log_level": "INFO",
            "server": {"host": "127.0.0.1", "port": self.http_port},
            # As in tests/dashboard.py: no idle CPU class for password checks on the busy test machine.
            "security": {"session_secret": SESSION_SECRET, "argon2_idle_seconds": 0},
            "gateway": {
                "host": "127.0.0.1",
                "port": self.gateway_port,
                "public_host": "127.0.0.1",
                "public_port": lab.haproxy.port("kvmvdi_gateway"),
            },
            "broker": {"reaper_interval": 0.5},
            "hypervisors": {"fence_after": 3},
            "cluster": {"redis_url": lab.redis.url, "replica": self.name, **CLUSTER_SETTINGS},
            "alerts": {
                "webhook_url": lab.alerts.url,
                "webhook_secret": WEBHOOK_SECRET,
                "rate_limit": ALERT_RATE_LIMIT,
            },
        }
        for table, entries in self.extra.items():
            values[table] = {**values.get(table, {}), **entries} if isinstance(entries, dict) else entries
        self.config_path.write_text(render_config(values))

    def start(self) -> None:
        self.write_config()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KVMVDI_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = spawn(
            [sys.executable, "-m", "app", "--config", str(self.config_path), "serve"],
            run_id=self.lab.run_dir.id,
            log_path=self.log_path,
            env=env,
            cwd=REPO,
        )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return False

    def hears_the_bus(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:  # noqa: S310
            return bool(json.loads(response.read())["bus"])

    def wait_ready(self, timeout: float = 90) -> None:
        wait_until(
            self.ready, what=f"replica {self.name}", timeout=timeout, log_path=self.log_path, proc=self.proc
        )

    def kill(self) -> None:
        """``kill -9``: no drain, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def terminate(self) -> None:
        """SIGTERM (what systemd sends): the replica drains, then stops."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        stop_process(self.proc, timeout=40)
        self.proc = None

    def log(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def release(self) -> None:
        for port in (self.http_port, self.gateway_port):
            if port:
                release_port(port)
        self.http_port = self.gateway_port = 0


class ClusterLab:
    def __init__(
        self,
        run_dir: RunDir,
        *,
        galera: GaleraCluster,
        redis: RedisServer,
        hypervisor: LibvirtHost | None = None,
        names: Iterable[str] = REPLICAS,
    ) -> None:
        self.run_dir = run_dir
        self.dir = run_dir.path / "cluster-lab"
        self.galera = galera
        self.redis = redis
        self.hypervisor = hypervisor
        self.replicas = [Replica(self, name) for name in names]
        self.haproxy: HAProxy
        self.ssh_key: DashboardKey
        self.hypervisor_id: int | None = None
        self.admin_password = ADMIN_PASSWORD
        # Where every replica posts its alerts (a webhook receiver in this process).
        self.alerts = WebhookReceiver(WEBHOOK_SECRET).start()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The dashboard as users reach it: through HAProxy."""
        return self.haproxy.url("kvmvdi_http")

    @property
    def database_url(self) -> str:
        """The replicas' database: HAProxy's ``kvmvdi_db`` in front of the Galera nodes."""
        return self.galera.url_for("127.0.0.1", self.haproxy.port("kvmvdi_db"))

    def replica(self, name: str) -> Replica:
        return next(replica for replica in self.replicas if replica.name == name)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> ClusterLab:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ssh_key = ensure_dashboard_key(self.dir / "ssh")
        DashboardCA.load_or_create(self.dir / "ca")
        for replica in self.replicas:
            replica.allocate()
        # A password-less user that can only log in: HAProxy's mysql-check.
        self.galera.nodes[0].sql("CREATE USER IF NOT EXISTS 'haproxy_check'@'127.0.0.1'")
        self.haproxy = HAProxy(
            self.run_dir,
            servers={
                "kvmvdi_replicas": [Server(r.name, "127.0.0.1", r.http_port) for r in self.replicas],
                "kvmvdi_consoles": [Server(r.name, "127.0.0.1", r.http_port) for r in self.replicas],
                "kvmvdi_gateways": [
                    Server(r.name, "127.0.0.1", r.gateway_port, check_port=r.http_port) for r in self.replicas
                ],
                "kvmvdi_galera": [Server(n.name, n.host, n.port) for n in self.galera.nodes],
            },
        ).start()
        self.haproxy.wait_states("kvmvdi_galera", {"n1": "UP"})
        asyncio.run(self._prepare_database())
        first, *others = self.replicas
        first.start()  # it alone migrates (the others find the schema up to date)
        first.wait_ready()
        for replica in others:
            replica.start()
        for replica in others:
            replica.wait_ready()
        self.wait_balanced()
        report.note(
            "cluster-lab", f"{len(self.replicas)} replicas behind haproxy", time.monotonic() - started
        )
        return self

    async def _prepare_database(self) -> None:
        self.galera.reset()
        await asyncio.to_thread(database.upgrade, self.database_url)
        db = database.connect_database(self.database_url)
        await db.connect()
        try:
            await create_local_user(db, "admin", self.admin_password, role="admin")
            if self.hypervisor is not None:
                self.hypervisor.authorize(self.ssh_key.public_line)
                record = ssh_record(self.hypervisor, name="h0-cluster")
                self.hypervisor_id = int(await db.execute(hypervisors.insert().values(**row_values(record))))
        finally:
            await db.disconnect()

    def wait_balanced(self, timeout: float = 30) -> None:
        """HAProxy sends traffic to every running replica (and to none that is not)."""
        expected = {r.name: ("UP" if r.running and r.ready() else "DOWN") for r in self.replicas}
        for backend in ("kvmvdi_replicas", "kvmvdi_consoles"):
            self.haproxy.wait_states(backend, expected, timeout=timeout)

    def heal(self) -> None:
        """Everything back as a test found it: Galera nodes, Redis, every replica ready and balanced."""
        if any(not node.running for node in self.galera.nodes):
            self.galera.heal()
            self.haproxy.wait_states("kvmvdi_galera", {"n1": "UP"}, timeout=60)
        if not self.redis.running:
            self.redis.start()
        for replica in self.replicas:
            if not replica.running:
                replica.extra = {}
                replica.start()
        for replica in self.replicas:
            replica.wait_ready()
            # Ready needs Redis to answer; hearing the others again (and the resync that closes
            # live sockets) follows on the subscriber's back-off: wait for it too.
            wait_until(
                replica.hears_the_bus,
                what=f"replica {replica.name} on the bus",
                timeout=30,
                log_path=replica.log_path,
                proc=replica.proc,
            )
        self.wait_balanced()

    def stop(self) -> None:
        for replica in self.replicas:
            with contextlib.suppress(Exception):
                replica.stop()
            replica.release()
        with contextlib.suppress(AttributeError):
            self.haproxy.stop()
        self.alerts.stop()

    # -- clients ---------------------------------------------------------------------------------

    async def admin(self, base_url: str | None = None) -> BrowserLikeClient:
        client = BrowserLikeClient(base_url or self.url)
        response = await client.login("admin", self.admin_password)
        if response.status_code != 303:
            raise ServiceError(f"admin log-in through {base_url or self.url} answered {response.status_code}")
        return client
