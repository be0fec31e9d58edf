"""A 3-node MariaDB Galera cluster on loopback ports: the database of the cluster tests.

Each node is a ``mariadbd`` with its own data dir, socket and four ports (client,
group communication, IST, SST). Node 1 bootstraps a new cluster from a pristine
data dir (the one :mod:`tests.services.mariadb` caches); nodes 2 and 3 join and
receive their data by rsync SST. Database ``vdi`` and user ``vdi`` are created
once the cluster is complete, so every node has them.

Tests may kill a node (``kill -9``) and let it rejoin; :meth:`GaleraCluster.reset`
gives an empty ``vdi`` database (replicated DDL).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import cache, report
from .mariadb import DATABASE, USER, install_data_dir, server_version
from .ports import allocate_port_block, release_port
from .process import log_tail, pid_alive, run, spawn, stop_process, wait_until
from .rundir import RunDir

NODES = 3
CLUSTER_NAME = "kvmvdi-test"


class GaleraNode:
    def __init__(self, cluster: GaleraCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"n{index}"
        self.dir: Path = cluster.dir / self.name
        self.host = "127.0.0.1"
        # client, gcomm, IST and SST ports, consecutive.
        self.port = 0
        self.config_path = self.dir / "my.cnf"
        self.log_path = self.dir / "error.log"
        self.socket_path = self.dir / "mysqld.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def gcomm_port(self) -> int:
        return self.port + 1

    @property
    def url(self) -> str:
        """``mysql://vdi:PW@127.0.0.1:PORT/vdi`` straight to this node."""
        return self.cluster.url_for(self.host, self.port)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def write_config(self, peers: str) -> None:
        data = self.dir / "data"
        self.config_path.write_text(
            "\n".join(
                [
                    "[mysqld]",
                    "user=mysql",
                    f"datadir={data}",
                    f"socket={self.socket_path}",
                    f"pid-file={self.dir / 'mysqld.pid'}",
                    f"log-error={self.log_path}",
                    f"tmpdir={self.dir / 'tmp'}",
                    f"port={self.port}",
                    f"bind-address={self.host}",
                    "skip-name-resolve",
                    "character-set-server=utf8mb4",
                    "collation-server=utf8mb4_unicode_ci",
                    "innodb_buffer_pool_size=48M",
                    "innodb_log_file_size=16M",
                    "innodb_flush_log_at_trx_commit=0",
                    "performance_schema=OFF",
                    "max_connections=400",
                    "binlog_format=ROW",
                    "default_storage_engine=InnoDB",
                    "innodb_autoinc_lock_mode=2",
                    "wsrep_on=ON",
                    "wsrep_provider=/usr/lib/galera/libgalera_smm.so",
                    f"wsrep_cluster_name={CLUSTER_NAME}",
                    f"wsrep_cluster_address=gcomm://{peers}",
                    f"wsrep_node_name={self.name}",
                    f"wsrep_node_address={self.host}:{self.gcomm_port}",
                    'wsrep_provider_options="'
                    f"gmcast.listen_addr=tcp://{self.host}:{self.gcomm_port};"
                    f"ist.recv_addr={self.host}:{self.port + 2};gcache.size=32M"
                    '"',
                    f"wsrep_sst_receive_address={self.host}:{self.port + 3}",
                    "wsrep_sst_method=rsync",
                    "[client]",
                    f"socket={self.socket_path}",
                    "",
                ]
            )
        )

    def start(self, *, bootstrap: bool = False, extra: tuple[str, ...] = ()) -> None:
        argv = ["mariadbd", f"--defaults-file={self.config_path}"]
        if bootstrap:
            argv.append("--wsrep-new-cluster")
        self._proc = spawn(
            [*argv, *extra],
            run_id=self.cluster.run_dir.id,
            log_path=self.dir / "mariadbd.out",
        )

    def wait_synced(self, timeout: float = 90) -> None:
        wait_until(
            lambda: self.status("wsrep_local_state_comment") == "Synced",
            what=f"galera node {self.name}",
            timeout=timeout,
            log_path=self.log_path,
            proc=self._proc,
        )

    def sql(self, statements: str, *, timeout: float = 30) -> str:
        """SQL as root over this node's unix socket; tab-separated rows without headers."""
        return run(
            ["mariadb", f"--defaults-file={self.config_path}", "-u", "root", "-N", "-B", "-e", statements],
            timeout=timeout,
        ).stdout

    def status(self, variable: str) -> str:
        out = self.sql(f"SHOW STATUS LIKE '{variable}'").strip()
        return out.split("\t", 1)[1] if "\t" in out else ""

    def kill(self) -> None:
        """``kill -9``: the node vanishes without leaving the group."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=30)

    def stop(self) -> None:
        stop_process(self._proc, timeout=60)
        self._proc = None

    def rejoin(self) -> None:
        """Start a killed node again; it rejoins (by IST when the cluster still has the write-sets)."""
        position = self._recovered_position()
        extra = (f"--wsrep-start-position={position}",) if position else ()
        self.start(extra=extra)

    def _recovered_position(self) -> str:
        recover_log = self.dir / "recover.log"
        recover_log.unlink(missing_ok=True)
        run(
            [
                "mariadbd",
                f"--defaults-file={self.config_path}",
                "--wsrep-recover",
                f"--log-error={recover_log}",
            ],
            timeout=120,
        )
        for line in log_tail(recover_log, 200).splitlines():
            if "Recovered position:" in line:
                return line.split("Recovered position:", 1)[1].strip()
        return ""


class GaleraCluster:
    def __init__(self, run_dir: RunDir, name: str = "galera") -> None:
        self.run_dir = run_dir
        self.dir: Path = run_dir.path / name
        self.nodes = [GaleraNode(self, index) for index in range(1, NODES + 1)]
        self.user = USER
        self.database = DATABASE
        self.password = secrets.token_urlsafe(12)

    def url_for(self, host: str, port: int) -> str:
        return f"mysql://{self.user}:{self.password}@{host}:{port}/{self.database}"

    @property
    def url(self) -> str:
        """Straight to node 1 (tests that need no failover)."""
        return self.nodes[0].url

    def start(self) -> GaleraCluster:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            node.port = allocate_port_block(4, node.host)
            (node.dir / "tmp").mkdir(parents=True, exist_ok=True)
        peers = ",".join(f"{node.host}:{node.gcomm_port}" for node in self.nodes)
        for node in self.nodes:
            node.write_config(peers)
        first = self.nodes[0]
        data = first.dir / "data"
        template = cache.entry("mariadb-datadir", server_version())
        if not cache.restore(template, data):
            install_data_dir(first.config_path, data, self.dir / "install-db.log")
            cache.store(data, template)
        for node in self.nodes[1:]:
            (node.dir / "data").mkdir()
        subprocess.run(["chown", "-R", "mysql:mysql", str(self.dir)], check=True)
        first.start(bootstrap=True)
        first.wait_synced()
        for node in self.nodes[1:]:
            node.start()
            node.wait_synced()
        first.sql(
            f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4;"
            + "".join(
                f"CREATE USER '{USER}'@'{h}' IDENTIFIED BY '{self.password}';"
                f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'{h}';"
                for h in ("127.0.0.1", "localhost")
            )
        )
        report.note(
            "galera",
            f"started a {NODES}-node cluster on ports {', '.join(str(n.port) for n in self.nodes)}",
            time.monotonic() - started,
        )
        return self

    def size(self, node: int = 0) -> int:
        return int(self.nodes[node].status("wsrep_cluster_size") or 0)

    def wait_size(self, size: int, *, timeout: float = 60) -> None:
        """Wait until every running node sees a primary component of ``size`` nodes."""

        def settled() -> bool:
            running = [node for node in self.nodes if node.running]
            return all(
                node.status("wsrep_cluster_size") == str(size)
                and node.status("wsrep_cluster_status") == "Primary"
                and node.status("wsrep_local_state_comment") == "Synced"
                for node in running
            )

        wait_until(settled, what=f"galera cluster of {size}", timeout=timeout)

    def reset(self) -> None:
        """An empty ``vdi`` database on every node (DDL is replicated in total order)."""
        node = next(node for node in self.nodes if node.running)
        node.sql(f"DROP DATABASE IF EXISTS {DATABASE}; CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4;")

    def heal(self) -> None:
        """Bring back any node a test killed or stopped (end of a fault test)."""
        for node in self.nodes:
            if not node.running:
                node.rejoin()
        for node in self.nodes:
            node.wait_synced()
        self.wait_size(NODES)

    def stop(self) -> None:
        # Last node stopped is node 1: it stays safe to bootstrap from.
        for node in reversed(self.nodes):
            node.stop()
            with contextlib.suppress(OSError):
                pid = int((node.dir / "mysqld.pid").read_text().split()[0])
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
        for node in self.nodes:
            if node.port:
                release_port(node.port, 4)
                node.port = 0
        if not self.dir.exists():
            return
        # Data of a finished run is worth nothing; the run dir goes away with it.
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tails(self) -> str:
        return "\n".join(log_tail(node.log_path, 15) for node in self.nodes)
