"""Private service instances for tests that stop and restart them: a Redis server and a PostgreSQL cluster of
their own (temporary directory, free port), and a RabbitMQ virtual host of their own on the machine's broker.
The machine's shared services are never stopped or reconfigured.

As root, PostgreSQL runs as the `postgres` user (it refuses to run as root); the cluster lives in a directory
outside pytest's 0700 tmp tree so that user can reach it."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from server_it_helpers import free_port, wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class PrivateRedis:
    """redis-server on a free port, no persistence: a restart loses every key, as a crashed cache would."""

    def __init__(self, directory: Path):
        if not Path(REDIS_SERVER).exists():
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=2)

    def ping(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def start(self) -> PrivateRedis:
        self.port = self.port or free_port()
        # The port was free a moment ago; after a stop it is ours again unless someone took it meanwhile.
        wait_until(lambda: _port_free(self.port), 10, 0.1, what=f"port {self.port} to be free for Redis")
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log"), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: self.process.poll() is not None or self.ping(), 20, 0.05, what="the private Redis")
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {self.log()[-2000:]}")
        return self

    def stop(self, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def restart(self, down_s: float = 0.0, kill: bool = False) -> None:
        """Stop the server process and start a new one on the same port (all data gone)."""
        self.stop(kill=kill)
        time.sleep(down_s)
        self.start()
        self.restarts += 1

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _postgres_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()])
    if not candidates:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return candidates[-1]


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on a free port, trust authentication, user postgres."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="aieval-it-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.logfile = self.root / "postgres.log"
        self.port = 0
        self.as_root = os.geteuid() == 0
        self.initdb, self.pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
        self.sockets.mkdir()
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
            os.chmod(self.root, 0o755)

    def _run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                               f"{self.log()[-3000:]}")
        return result

    def _options(self) -> str:
        # Durability is not what these tests are about: no fsync makes start, stop and writes fast.
        return (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.sockets} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")

    def start(self) -> PrivatePostgres:
        if not (self.data / "PG_VERSION").exists():
            self._run([self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                       "--locale=C", "--no-sync"], timeout=120)
        self.port = self.port or free_port()
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.logfile), "-o", self._options(), "-w", "-t", "60",
                   "start"], timeout=90)
        return self

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart -m fast`: every open connection is terminated, the server is back on the same port."""
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.logfile), "-o", self._options(), "-m", mode, "-w",
                   "-t", "60", "restart"], timeout=90)

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"], timeout=60)

    def cleanup(self) -> None:
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new database; returns its SQLAlchemy URL (psycopg 3 driver), as AIEVAL_DB_URL expects it."""
        import psycopg

        name = name or f"aieval_it_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url(), autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""


# ---- RabbitMQ: the machine's broker, a virtual host per test run ----------------------------------------
RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672


def rabbitmq_reachable(timeout: float = 3) -> str | None:
    """None when an AMQP server answers on 127.0.0.1:5672, else why not."""
    import socket

    try:
        with socket.create_connection((RABBITMQ_HOST, RABBITMQ_PORT), timeout=timeout):
            return None
    except OSError as exc:
        return f"nothing listens on {RABBITMQ_HOST}:{RABBITMQ_PORT} ({exc})"


class RabbitVhost:
    """A virtual host of its own on the machine's RabbitMQ (created with rabbitmqctl, deleted afterwards): queues
    named `api` and `local` in it cannot meet another test run's."""

    def __init__(self, name: str | None = None):
        self.ctl = shutil.which("rabbitmqctl") or ("/usr/sbin/rabbitmqctl" if Path("/usr/sbin/rabbitmqctl").exists() else "")
        self.name = name or f"aieval-it-{uuid.uuid4().hex[:10]}"

    def _ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.ctl, "-q", *args], capture_output=True, text=True, timeout=60)

    def create(self) -> str | None:
        """None on success, else why the vhost could not be made."""
        if not self.ctl:
            return "rabbitmqctl is not installed (it comes with rabbitmq-server)"
        for args in (("add_vhost", self.name), ("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")):
            result = self._ctl(*args)
            if result.returncode != 0:
                return f"rabbitmqctl {' '.join(args)} failed: {(result.stderr or result.stdout).strip()[:500]}"
        return None

    def delete(self) -> None:
        if self.ctl:
            self._ctl("delete_vhost", self.name)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{self.name}"
