"""Parity: the exported model must give torch's outputs, shapes and values within `atol`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stream.errors import ParityError


@dataclass
class ParityReport:
    atol: float
    cases: list[dict] = field(default_factory=list)   # batch, fill, candidates, max_abs_diff

    @property
    def max_abs_diff(self) -> float:
        return max(c["max_abs_diff"] for c in self.cases)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol

    def to_dict(self) -> dict:
        return {"atol": self.atol, "max_abs_diff": self.max_abs_diff, "passed": self.passed, "cases": self.cases}


def _session(path: str | Path):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_seqrec_parity(model, onnx_path: str | Path, batch_sizes=(1, 7, 64), fills=("short", "full"),
                        n_candidates=(1, 100), atol: float = 1e-4, seed: int = 0, raise_on_fail: bool = True) -> ParityReport:
    """Compare torch eager and onnxruntime on random histories: 'short' = 1..5 items then padding,
    'full' = max_len items; with the state path (outputs `state` and `items`), its dot products too, as
    the server computes them. Raises ParityError naming every failing case and its max diff."""
    sess = _session(onnx_path)
    state_path = {"state", "items"} <= {o.name for o in sess.get_outputs()}
    rng = np.random.default_rng(seed)
    T, n = model.cfg.max_len, model.cfg.n_items
    report = ParityReport(atol)
    model.eval()
    for b in batch_sizes:
        for fill in fills:
            for c in n_candidates:
                seq = rng.integers(1, n, (b, T))
                if fill == "short":
                    for row in seq:
                        row[: T - int(rng.integers(1, 6))] = 0
                cand = rng.integers(1, n, (b, c))
                with torch.no_grad():
                    want = model(torch.from_numpy(seq), torch.from_numpy(cand)).numpy()
                outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"seq": seq, "candidates": cand})))
                got = outs["scores"]
                if got.shape != want.shape:
                    raise ParityError(f"batch {b} {fill} C={c}: shape {got.shape} != torch {want.shape}")
                diff = float(np.abs(got - want).max())
                if state_path:
                    state, items = outs["state"], outs["items"]
                    diff = max(diff, float(np.abs(np.einsum("bcd,bd->bc", items[cand], state) - want).max()))
                report.cases.append({"batch": b, "fill": fill, "candidates": c, "max_abs_diff": diff})
    if raise_on_fail and not report.passed:
        bad = [f"batch {c['batch']} {c['fill']} C={c['candidates']}: {c['max_abs_diff']:.2e}"
               for c in report.cases if c["max_abs_diff"] > atol]
        raise ParityError(f"ONNX parity failed (atol {atol:g}): " + "; ".join(bad))
    return report
