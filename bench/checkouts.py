"""Side by side: a bench's measurement run in this checkout and in others (`--repo`, e.g. a `git worktree` of
an older commit), each in a process of its own with that checkout's code first on the path, rounds
interleaved (A, B, A, B: this box is shared and noisy).

A bench using this runs its own file with `--inner ARG` in each checkout and prints one JSON line there; its
inner part must import only what every checkout measured has (not this module: an older checkout lacks it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def add_arguments(ap, out: str) -> None:
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repo", action="append", default=[], help="another checkout to measure beside this one")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / out))
    ap.add_argument("--inner", type=int, help="(internal) measure in the current checkout and print JSON")


def run_in(script: str, repo: Path, arg: int) -> dict:
    """`script --inner arg` run in `repo` (its code first on the path): the JSON it printed last."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = subprocess.run([sys.executable, str(Path(script).resolve()), "--inner", str(arg)], cwd=repo, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(script: str, repos: list[str], arg: int, rounds: int,
                each: Callable[[int, Path, dict], None] | None = None) -> tuple[list[Path], dict[str, list[dict]]]:
    """This checkout and `repos`, `rounds` times in turn: (the checkouts, this one first; checkout -> its runs).
    `each(round, checkout, result)` is called as results come."""
    checkouts = [ROOT, *(Path(r).resolve() for r in repos)]
    runs: dict[str, list[dict]] = {str(r): [] for r in checkouts}
    for k in range(rounds):
        for r in checkouts:
            got = run_in(script, r, arg)
            runs[str(r)].append(got)
            if each is not None:
                each(k, r, got)
    return checkouts, runs
