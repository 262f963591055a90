"""A real local Redis Cluster: N master `redis-server` processes (`--cluster-enabled yes`), their slots
assigned by `redis-cli --cluster create` (no replicas: a local stack, like the single redis-server).

    recstream stack up --redis-cluster 3     # masters on RECSTREAM_REDIS_URL's port and the next two
    with private_cluster(3) as url: ...       # a throwaway one on free ports (tests, benchmarks)

`RECSTREAM_REDIS_URL` may name any master: the client discovers the others (`store.connect`).
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import redis

from stream.errors import StackError
from stream.ops.stack import REDIS_TUNING, StackConfig, _Service, _wait, port_open, redis_binary


def _nodes(cfg: StackConfig, n: int) -> list[_Service]:
    return [_Service(f"redis-cluster-{i}", "redis-server", cfg, cfg.redis_port + i) for i in range(n)]


def running_nodes(cfg: StackConfig) -> list[_Service]:
    """The cluster nodes this stack started (from their pid files)."""
    return [svc for svc in _nodes(cfg, 16) if svc.pidfile.exists()]


def _healthy(host: str, ports: list[int]) -> bool:
    for port in ports:
        info = redis.Redis(host=host, port=port, socket_timeout=1).cluster("info")
        state = info.get("cluster_state") if isinstance(info, dict) else None
        if state != "ok":
            return False
    return True


def up(cfg: StackConfig, n: int = 3, *, tied: bool = False, timeout: float = 30.0) -> list[str]:
    """Start `n` cluster-enabled redis-servers on `cfg.redis_port` and the next ports and join them into one
    cluster (idempotent: a running cluster is left as it is)."""
    if n < 3:
        raise StackError("a Redis Cluster needs at least 3 masters")
    cli = shutil.which("redis-cli")
    if not cli:
        raise StackError("redis-cli not found on PATH: install it with `apt-get install redis-tools`")
    nodes = _nodes(cfg, n)
    for svc in nodes:
        if not svc.pid() and port_open(cfg.host, svc.port):
            raise StackError(f"{svc.name}: port {svc.port} is taken by a process this stack did not start")
    lines, started = [], []
    try:
        for svc in nodes:
            d = cfg.state_dir / svc.name
            d.mkdir(parents=True, exist_ok=True)
            line = svc.start([redis_binary(), "--port", str(svc.port), "--bind", cfg.host, "--save", "",
                              "--appendonly", "no", "--protected-mode", "no", "--dir", str(d.resolve()),
                              "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                              "--cluster-node-timeout", "5000", *REDIS_TUNING], tied)
            lines.append(line)
            if "started" in line:
                started.append(svc)
        ports = [svc.port for svc in nodes]
        for port in ports:
            _wait(lambda p=port: redis.Redis(host=cfg.host, port=p, socket_timeout=1).ping(),
                  f"cluster node on port {port}", timeout)
        if started:
            cmd = [cli, "--cluster", "create", *[f"{cfg.host}:{p}" for p in ports], "--cluster-replicas", "0",
                   "--cluster-yes"]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
            if done.returncode != 0:
                raise StackError(f"redis-cli --cluster create failed: {done.stdout[-500:]} {done.stderr[-500:]}")
        _wait(lambda: _healthy(cfg.host, ports), "the Redis Cluster (cluster_state:ok on every master)", timeout)
        lines.append(f"redis cluster: {n} masters on ports {ports[0]}-{ports[-1]}, url {cfg.redis_url}")
    except BaseException:
        for svc in started:
            svc.stop()
        raise
    return lines


def down(cfg: StackConfig) -> list[str]:
    return [svc.stop() for svc in running_nodes(cfg)]


def _free_ports(n: int) -> int:
    """A first port of `n` free consecutive ones whose cluster bus ports (+10000) are free too. Both stay
    below the kernel's ephemeral range, where an outgoing connection (a Kafka or Redis client's) may hold a
    port that nothing listens on, and a node could not bind it; free means a bind succeeds now."""
    import random
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = min(low, 55536) - 10000 - n            # port + 10000 + n below the ephemeral range
    if top <= 10000:
        raise StackError(f"no room for a private Redis Cluster below the ephemeral ports ({low})")
    rnd = random.Random()
    for _ in range(200):
        port = rnd.randrange(10000, top)
        if all(_bindable(port + i) and _bindable(port + 10000 + i) for i in range(n)):
            return port
    raise StackError(f"no {n} free consecutive ports for a private Redis Cluster")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class private_cluster:
    """A throwaway N-master Redis Cluster on free ports: `with private_cluster(3) as url:`."""

    def __init__(self, n: int = 3):
        self.n = n
        self._tmp = tempfile.TemporaryDirectory(prefix="recstream-cluster-")
        self.cfg = StackConfig(Path(self._tmp.name), redis_port=_free_ports(n))

    def __enter__(self) -> str:
        up(self.cfg, self.n, tied=True)
        return self.cfg.redis_url.rsplit("/", 1)[0]         # a cluster has database 0 only

    def __exit__(self, *exc) -> None:
        down(self.cfg)
        self._tmp.cleanup()
