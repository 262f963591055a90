"""The worker's tree work in a child process at the lowest CPU priority: the background refit on the window
(LightGBM) and its compile to machine code (lleaves, LLVM).

Why a process: on a busy box (this one has two cores, shared with the broker and Redis) a fit of the full
window took 3.5 s of a core in the worker's own fit thread and the compile 3.1 s more; at 1,000 events/s the
recommendations' p50 latency doubled (to about 200 ms) for those seconds, every refit (the twenty-fifth
session, docs/benchmarks.md). A thread cannot be given a lower priority without risking the GIL with it (a
descheduled low-priority thread that holds the GIL stalls the others). A child at nice 19 alone did not help
either: Linux's autogroup scheduling weighs each session as a group, so the child's nice value only ranked it
inside the worker's group, and the broker and Redis (in sessions of their own) lost CPU to it. So the child
starts a session of its own and sets that group's nice to 19: it takes only the CPU the others leave (a fit
of the full window then took 16 s of wall time, and the spike was gone). The compile was already in a child
(in process, LLVM held the GIL for up to 50 ms at a time).

The child gets the window as a `.npy` file (about 8 ms to write 40 MB) and the parameters as JSON, and
writes the model as LightGBM text (and the compiled object file); this process loads both. LightGBM with
`deterministic` and one thread fits the same trees in either process. The child exits as soon as the worker
that started it is gone: nothing outlives a stop.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile

import numpy as np

log = logging.getLogger("recstream.ranker")

_CHILD = """
import json, os, shutil, sys, threading, time
parent, d = os.getppid(), sys.argv[1]
os.setsid()            # a session of its own: Linux's autogroup scheduling weighs it apart from the worker's
try:
    with open("/proc/self/autogroup", "w") as fh:
        fh.write("19")     # and that group at the lowest weight: the worker, the broker and Redis come first
except OSError:
    pass               # no autogroup (a kernel without it, a container that forbids it): nice alone
os.nice(19)
def watch():             # the worker gone (a SIGKILL): its temporary folder would be left; the child removes it
    while os.getppid() == parent:
        time.sleep(0.2)
    shutil.rmtree(d, ignore_errors=True)
    os._exit(1)
threading.Thread(target=watch, daemon=True).start()
job = json.load(open(os.path.join(d, "job.json")))
model = os.path.join(d, "model.txt")
if job["fit"]:
    import numpy as np
    import lightgbm as lgb
    X, y, w = (np.load(os.path.join(d, n + ".npy")) for n in ("X", "y", "w"))
    for n in ("X", "y", "w"):
        os.unlink(os.path.join(d, n + ".npy"))      # read: the 40 MB on disk are not needed any more
    lgb.train(job["params"], lgb.Dataset(X, y, weight=w, free_raw_data=True), job["rounds"]).save_model(model)
if job["compile"]:
    import lleaves
    lleaves.Model(model_file=model).compile(cache=os.path.join(d, "model.o"), raw_score=True)
"""


def _run(d: str, job: dict):
    """Run the child on folder `d`; returns (the booster it fitted or None, the compiled model or None)."""
    with open(os.path.join(d, "job.json"), "w") as fh:
        json.dump(job, fh)
    subprocess.run([sys.executable, "-c", _CHILD, d], check=True, capture_output=True, timeout=1800)
    model = os.path.join(d, "model.txt")
    booster = fast = None
    if job["fit"]:
        import lightgbm as lgb
        booster = lgb.Booster(model_file=model)
    if job["compile"]:
        import lleaves
        fast = lleaves.Model(model_file=model)
        fast.compile(cache=os.path.join(d, "model.o"), raw_score=True)
    return booster, fast


def fit_trees(X: np.ndarray, y: np.ndarray, w: np.ndarray, params: dict, rounds: int, compile: bool):
    """LightGBM's `train(params, Dataset(X, y, weight=w), rounds)` in the child, and its compiled copy when
    `compile`: (booster, compiled model or None). Raises what the child raised (the caller fits in process)."""
    with tempfile.TemporaryDirectory(prefix="recstream-fit-") as d:
        for name, arr in (("X", X), ("y", y), ("w", w)):
            np.save(os.path.join(d, name + ".npy"), arr)
        return _run(d, {"fit": True, "compile": compile, "params": params, "rounds": rounds})


def compile_trees(booster):
    """`booster` as machine code (lleaves), returning raw scores; None when that fails (then LightGBM scores)."""
    try:
        with tempfile.TemporaryDirectory(prefix="recstream-compile-") as d:
            booster.save_model(os.path.join(d, "model.txt"))
            return _run(d, {"fit": False, "compile": True})[1]
    except Exception as exc:  # noqa: BLE001 - an optimisation: the booster scores the same without it
        log.warning("the ranker's trees were not compiled (%s: %s): LightGBM scores them", type(exc).__name__, exc)
        return None
