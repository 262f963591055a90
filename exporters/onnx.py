"""Export a SeqRec model to ONNX: dynamic batch and candidate axes, fixed history length, opset 17."""
from __future__ import annotations

from pathlib import Path

import torch

from models.seqrec import SeqRec

OPSET = 17


def export_seqrec(model: SeqRec, path: str | Path, opset: int = OPSET) -> Path:
    """Write `path` (inputs `seq` int64 (B, max_len), `candidates` int64 (B, C); output `scores` (B, C))."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    T = model.cfg.max_len
    seq = torch.randint(1, model.cfg.n_items, (2, T))
    cand = torch.randint(1, model.cfg.n_items, (2, 7))
    torch.onnx.export(
        model, (seq, cand), str(path), dynamo=False, opset_version=opset,
        input_names=["seq", "candidates"], output_names=["scores"],
        dynamic_axes={"seq": {0: "batch"}, "candidates": {0: "batch", 1: "n_candidates"},
                      "scores": {0: "batch", 1: "n_candidates"}},
    )
    return path
