"""The rows every benchmark prints and writes (name, value, unit, settings). Light on purpose: the GPU
groups (bench/scorer.py, bench/training.py) import it on a machine that has torch and onnxruntime but none
of the streaming stack."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


class Rows:
    def __init__(self, common: dict):
        self.rows, self.common = [], common

    def add(self, name: str, value: float, unit: str, **settings) -> None:
        self.rows.append({"name": name, "value": round(float(value), 3), "unit": unit,
                          "settings": {**self.common, **settings}})
        print(f"  {name:48s} {value:>12,.4g} {unit}", flush=True)
