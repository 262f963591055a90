"""`recstream stack`: idempotent up, honest status, down stops only what it started, clear missing-binary errors."""
import os
import shutil
import subprocess
import sys

import pytest
import redis

from stream.ops import stack as st

pytestmark = pytest.mark.integration


def test_up_is_idempotent_and_down_stops_only_its_own(tmp_path):
    cfg = st.StackConfig(tmp_path / "state", broker_port=st.free_port(), redis_port=st.free_port())
    foreign_port = st.free_port()
    foreign = subprocess.Popen([shutil.which("redis-server"), "--port", str(foreign_port), "--save", ""],
                               stdout=subprocess.DEVNULL)
    try:
        first = st.up(cfg)
        assert all("started" in line for line in first)
        again = st.up(cfg)
        assert all("already running" in line for line in again)
        status = "\n".join(st.status(cfg))
        assert "memory-only" in status and status.count("answering") == 2
        st.down(cfg)
        assert not st.port_open(cfg.host, cfg.broker_port) and not st.port_open(cfg.host, cfg.redis_port)
        assert redis.Redis(port=foreign_port).ping()   # not ours: untouched
        assert st.main_status_code(cfg) == 3
    finally:
        st.down(cfg)
        foreign.terminate()
        foreign.wait(10)


def test_taken_port_and_missing_binary_are_clear(tmp_path, monkeypatch):
    port = st.free_port()
    other = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--save", ""], stdout=subprocess.DEVNULL)
    try:
        cfg = st.StackConfig(tmp_path / "s1", broker_port=st.free_port(), redis_port=port)
        import time
        time.sleep(0.3)
        with pytest.raises(st.StackError, match="port .* is taken"):
            st.up(cfg)
        assert not st.port_open(cfg.host, cfg.broker_port)    # nothing half-started is left behind
    finally:
        st.down(cfg)
        other.terminate()
        other.wait(10)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(st.StackError, match="apt-get install redis-server"):
        st.redis_binary()


def test_cli_stack_round_trip(tmp_path):
    env = dict(os.environ, RECSTREAM_STATE_DIR=str(tmp_path / "cli"),
               RECSTREAM_BROKERS=f"127.0.0.1:{st.free_port()}", RECSTREAM_REDIS_URL=f"redis://127.0.0.1:{st.free_port()}/0")
    run = lambda *a: subprocess.run([sys.executable, "-m", "stream.cli", "stack", *a], env=env, capture_output=True,
                                    text=True, timeout=60)
    try:
        up = run("up")
        assert up.returncode == 0 and "memory-only" in up.stdout, up.stderr
        assert run("status").returncode == 0
    finally:
        down = run("down")
    assert "stopped" in down.stdout
    assert run("status").returncode == 3


def _redis_children(parent: int) -> set[int]:
    """Live redis-server processes whose parent is `parent` (from /proc: redis-server rewrites its
    command line, so match on the process name)."""
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1: stat.rindex(")")]
            state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
            if name.startswith("redis-server") and int(ppid) == parent and state != "Z":
                out.add(int(d))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_a_killed_backtest_leaves_no_redis_server_behind(tmp_path):
    """`recstream backtest` starts a throwaway redis-server tied to it (PR_SET_PDEATHSIG): killed
    outright (SIGKILL: no cleanup code runs at all), the backtest still takes the server with it."""
    import time
    exe = [sys.executable, "-m", "stream.cli"]
    subprocess.run(exe + ["synth", "--events", "60000", "--users", "3000", "--items", "500", "--out", str(tmp_path)],
                   check=True, capture_output=True)
    proc = subprocess.Popen(exe + ["backtest", str(tmp_path / "events.jsonl"), "--format", "jsonl", "--rankers", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ours: set[int] = set()
    try:
        deadline = time.time() + 60
        while not _redis_children(proc.pid) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        ours = _redis_children(proc.pid)
        assert ours and proc.poll() is None, "the backtest never started its redis-server"
        time.sleep(1.0)                          # well into the run
        proc.kill()
        proc.wait(10)
        deadline = time.time() + 10
        while any(_alive(p) for p in ours) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in ours), "the private redis-server outlived the backtest"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in ours:
            if _alive(pid):
                os.kill(pid, 9)              # never leave one behind, even when the test fails


def test_our_redis_servers_keep_large_sorted_sets_as_skip_lists_and_the_worker_says_when_a_redis_does_not():
    """Every redis-server the project starts runs with zset-max-listpack-entries 64 (docs/stack.md); on a
    Redis left at the default (128) `server_advice`, which the worker logs at start, names the setting."""
    from stream.core.storage.store import ZSET_LISTPACK_MAX, server_advice
    with st.private_redis() as url:
        client = redis.Redis.from_url(url)
        assert client.config_get("zset-max-listpack-entries") == {"zset-max-listpack-entries": str(ZSET_LISTPACK_MAX)}
        assert server_advice(client) == []
        client.config_set("zset-max-listpack-entries", 128)
        advice = server_advice(client)
        assert len(advice) == 1 and "zset-max-listpack-entries 64" in advice[0] and "128" in advice[0]
