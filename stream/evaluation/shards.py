"""The backtest's systems in processes of their own: one replay per group of systems, at once.

The systems of a backtest share nothing but the log: each keeps its own state (the baselines in memory, each
recstream system under its own Redis key prefix, its own seeded random draws), and the replay (batches,
evaluated events, segments) depends on the log alone. So each group of systems can replay the log in a
process of its own and the groups' tracks be put together afterwards: the same report, figure for figure, as
one process gives (tested), in the time of the slowest group where there are cores for them.

The groups: the baselines; recstream (this process: its report, candidate recall, progress bar); recstream
retrained at event time (with its retrain job); recstream with a candidate model (a retrain's shadow check).
Processes start by `spawn` (onnxruntime, LightGBM and torch hold thread pools a fork would copy half-made); a
start (imports, the log pickled across, the systems built) is a cost a short log does not repay, so a log
shorter than PARALLEL_MIN_EVENTS replays in one process (the REES46 head's first 3,000 events: 28.3 / 29.2 s
against 28.1 / 27.3 in one process; its first 8,000: 38.5 / 39.7 against 46.4 / 40.7; all 17,434: 46.9 / 45.0
against 50.2 / 48.6, in turn). A group that fails is reported, with its traceback, once this process's own
replay is done.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import traceback

from tqdm import tqdm

from stream.evaluation.system import recstream_names
from stream.secrets import RedactingFilter, install_redaction

log = logging.getLogger("recstream.backtest")

PARALLEL_MIN_EVENTS = 10_000
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def groups(cfg) -> list[frozenset]:
    """The groups of system names, in the order a single process builds them (the report's row order)."""
    baselines = frozenset(n for n in cfg.systems if n != "recstream")
    recstream = [frozenset({n}) for n in recstream_names(cfg)] if "recstream" in cfg.systems else []
    return ([baselines] if baselines else []) + recstream


def parallel(cfg, n_events: int, n_groups: int) -> bool:
    """Whether the groups replay in processes of their own: `cfg.parallel`, or by default (None) where there
    are 2 or more cores and the log is long enough to repay the processes' start."""
    if n_groups < 2 or cfg.parallel is False:
        return False
    return bool(cfg.parallel) or (n_events >= PARALLEL_MIN_EVENTS and (os.cpu_count() or 1) > 1)


def run_shards(replay_log, events, items, cfg, redis_url, model_dir, progress: bool):
    """`replay_log` (backtest.py) of every group, the one with recstream in this process and the others in
    child processes at the same time; returns (this process's Replay with every group's tracks, in one
    process's order; the retrains done or None)."""
    gs = groups(cfg)
    if not parallel(cfg, len(events), len(gs)):
        return replay_log(events, items, cfg, redis_url, model_dir, progress)
    here = next((i for i, g in enumerate(gs) if "recstream" in g), 0)
    children = {}
    try:
        for i, g in enumerate(gs):
            if i != here:
                children[i] = _start(g, (events, items, cfg, redis_url, model_dir, g))
        replay, retrains = replay_log(events, items, cfg, redis_url, model_dir, progress, gs[here])
        waiting = [proc.name for proc, _ in children.values() if proc.is_alive()]
        if waiting:
            log.info("this process's replay is done; waiting for %s", ", ".join(waiting))
        parts = {i: _result(proc, receive) for i, (proc, receive) in children.items()}
    finally:
        for proc, _ in children.values():
            if proc.is_alive():
                proc.terminate()
            proc.join()
    tracks = {}
    for i in range(len(gs)):
        part_tracks, n_evaluated, part_retrains = (replay.tracks, len(replay.eval_ts), None) if i == here else parts[i]
        if n_evaluated != len(replay.eval_ts):
            raise RuntimeError(f"the backtest's groups evaluated different events ({n_evaluated} against "
                               f"{len(replay.eval_ts)}): a replay that depends on more than the log")
        tracks.update(part_tracks)
        retrains = part_retrains if part_retrains is not None else retrains
    replay.tracks = tracks
    return replay, retrains


def _start(group: frozenset, args: tuple):
    """A spawned process replaying `group` (`_replay_group`); returns (it, the end of the pipe it answers on)."""
    root = logging.getLogger()
    secrets = sorted({s for h in root.handlers for f in h.filters if isinstance(f, RedactingFilter) for s in f.secrets})
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    name = next(iter(group)) if len(group) == 1 else "the baselines"
    proc = ctx.Process(target=_replay_group, name=name, args=(send, root.getEffectiveLevel(), secrets, *args))
    proc.start()
    send.close()
    return proc, receive


def _result(proc, receive):
    """A child's (tracks, events evaluated, retrains); its error, raised here, if it failed."""
    try:
        ok, value = receive.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"the backtest's process for {proc.name} ended without a result (exit code "
                           f"{proc.exitcode})") from None
    if not ok:
        raise RuntimeError(f"the backtest's process for {proc.name} failed:\n{value}")
    return value


def _replay_group(send, level: int, secrets: list[str], events, items, cfg, redis_url, model_dir,
                  names: frozenset) -> None:
    """A child process: one group's replay; sends (True, (its tracks, events evaluated, its retrains)) or
    (False, the traceback)."""
    logging.basicConfig(level=level, format=LOG_FORMAT)     # its log lines as the CLI writes them, redacted
    install_redaction(secrets)
    tqdm.set_lock(threading.RLock())    # not tqdm's default, a semaphore this process's exit would leave behind
    try:
        from stream.evaluation.backtest import replay_log
        replay, retrains = replay_log(events, items, cfg, redis_url, model_dir, False, names)
        send.send((True, (replay.tracks, len(replay.eval_ts), retrains)))
    except BaseException:
        send.send((False, traceback.format_exc()))
        raise
    finally:
        send.close()
