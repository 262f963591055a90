"""The members of a SeqRec ensemble trained at once, one child process each, on a CPU with cores to spare.

One member's training step uses a small CPU poorly: on a 2-core box a MovieLens step takes 174-196 ms on both
cores and 262-314 ms on one, so two members side by side get about 1.4x the work done. Each child runs the
same `_fit` with the parent's intra-op thread count, so every member's weights are the ones it gets when
trained alone, bit for bit (one thread gives other weights than two); its OpenMP threads wait passively
(`OMP_WAIT_POLICY`), since two pools spinning on the same cores took 690 ms a step instead of 256.

The first member early-stops on the validation split; the others train as many epochs as its best. At once,
they cannot wait for that number: each trains the full `epochs` keeping its state after every epoch, and the
state after the first member's best epoch is the one kept (a run of k epochs is the first k of a longer run:
nothing in a step depends on how many epochs follow). On a GPU, or a single core, or where those states would
take more than a GiB (MovieLens: 20 states of 0.8 MB), the members train in turn as before.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context

import torch

KEEP_STATES_BYTES = 2**30


def runs_at_once(n_jobs: int) -> bool:
    return n_jobs > 1 and (os.cpu_count() or 1) > 1 and not torch.cuda.is_available()


def _run(threads: int, job: dict):
    """One `_fit` (its keyword arguments; `keep_states`: also its state after every epoch)."""
    from models.train import _fit
    torch.set_num_threads(threads)
    states = [] if job.pop("keep_states", False) else None
    return (*_fit(**job, states=states), states)


def fit_all(jobs: list[dict]) -> list[tuple]:
    """Each job's `_fit` -> (model, best, best epoch, its states or None): at once in child processes when
    `runs_at_once`, else in turn here."""
    threads = torch.get_num_threads()
    if not runs_at_once(len(jobs)):
        return [_run(threads, dict(job)) for job in jobs]
    before = os.environ.get("OMP_WAIT_POLICY")
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"           # read by each child's OpenMP runtime as it starts
    try:
        with ProcessPoolExecutor(len(jobs), mp_context=get_context("spawn")) as pool:
            return [f.result() for f in [pool.submit(_run, threads, job) for job in jobs]]
    finally:
        if before is None:
            os.environ.pop("OMP_WAIT_POLICY")
        else:
            os.environ["OMP_WAIT_POLICY"] = before


def _kept_bytes(n_items: int, cfg) -> int:
    """About what the other members' states after every epoch hold (float32 item table and blocks)."""
    return (cfg.members - 1) * cfg.epochs * 4 * (n_items * cfg.dim + cfg.layers * 12 * cfg.dim ** 2)


def fit_members(seqs: list[list[int]], vocab, cfg, full: bool, val, progress: bool, say) -> tuple[list, float, int]:
    """`cfg.members` models (seeds seed, seed + 1, ...): the first early-stopped on `val`, the others trained
    as many epochs as its best. Returns (members, the first one's validation NDCG@10, its best epoch). In turn
    where the others' states would take more than KEEP_STATES_BYTES (a catalogue of millions of items)."""
    job = dict(seqs=seqs, vocab=vocab, full=full)
    if not runs_at_once(cfg.members) or _kept_bytes(len(vocab), cfg) > KEEP_STATES_BYTES:
        model, best, best_epoch, _ = _run(torch.get_num_threads(), dict(job, cfg=cfg, val=val, progress=progress))
        others = fit_all([dict(job, cfg=replace(cfg, seed=cfg.seed + i), epochs=best_epoch, progress=progress)
                          for i in range(1, cfg.members)])
        return [model] + [o[0] for o in others], best, best_epoch
    (model, best, best_epoch, _), *others = fit_all(
        [dict(job, cfg=cfg, val=val, progress=progress)]
        + [dict(job, cfg=replace(cfg, seed=cfg.seed + i), epochs=cfg.epochs, progress=False, keep_states=True)
           for i in range(1, cfg.members)])
    for other, *_, states in others:
        other.load_state_dict(states[best_epoch - 1])
    say(f"{cfg.members - 1} more member(s) trained beside the first; each kept at epoch {best_epoch}, the first's best")
    return [model] + [o[0] for o in others], best, best_epoch


def fine_tune(members: list, seqs: list[list[int]], vocab, cfg, full: bool, epochs: int, progress: bool) -> list:
    """Each member (its seed seed + i) trained `epochs` more epochs on `seqs`, at once where `runs_at_once`."""
    return [r[0] for r in fit_all([dict(seqs=seqs, vocab=vocab, cfg=replace(cfg, seed=cfg.seed + i), full=full,
                                        epochs=epochs, progress=progress, model=m) for i, m in enumerate(members)])]
