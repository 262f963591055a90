"""Export a SeqRec model to ONNX: dynamic batch, candidate and history axes, opset 17.

Three outputs: `scores` (B, C), the model's forward; `state` (B, dim), the last position's state the
scores are dot products with; `items` (n_items, dim), the item embedding table. A server that scores
many candidates a user (a pool of thousands) runs the graph once for `state` and multiplies it with
`items` itself; `scores` stays for callers that want one run.

The history axis is dynamic: a history is left-padded to at most `max_len`, and a batch of short ones may
be passed with the leading padding cut off (positions are counted from the newest item; padding is masked
as a key), which the server does by length (`OnnxScorer._fresh_states`). Exports before the twenty-eighth session
have a fixed history axis, and the server passes them the full length.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.seqrec import SeqRec, SeqRecEnsemble

OPSET = 17
OUTPUTS = ("scores", "state", "items")


class _ServingGraph(nn.Module):
    def __init__(self, model: SeqRec | SeqRecEnsemble):
        super().__init__()
        self.model = model

    def forward(self, seq: torch.Tensor, candidates: torch.Tensor):
        h = self.model.state(seq)
        return self.model.score(h, candidates), h, self.model.item_table().clone()


def export_seqrec(model: SeqRec | SeqRecEnsemble, path: str | Path, opset: int = OPSET) -> Path:
    """Write `path` (inputs `seq` int64 (B, T <= max_len), `candidates` int64 (B, C); outputs `scores` (B, C),
    `state` (B, dim), `items` (n_items, dim))."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    T = model.cfg.max_len
    seq = torch.randint(1, model.cfg.n_items, (2, T))
    cand = torch.randint(1, model.cfg.n_items, (2, 7))
    torch.onnx.export(
        _ServingGraph(model).eval(), (seq, cand), str(path), dynamo=False, opset_version=opset,
        input_names=["seq", "candidates"], output_names=list(OUTPUTS),
        dynamic_axes={"seq": {0: "batch", 1: "history"}, "candidates": {0: "batch", 1: "n_candidates"},
                      "scores": {0: "batch", 1: "n_candidates"}, "state": {0: "batch"}},
    )
    _name_outputs(path)
    return path


def _name_outputs(path: Path) -> None:
    """An output the exporter folded into a constant (an ensemble's item table: a concatenation of
    parameters) keeps the constant's name; give it its name back through an Identity node."""
    import onnx
    graph_model = onnx.load(str(path))
    renamed = False
    for out, want in zip(graph_model.graph.output, OUTPUTS):
        if out.name != want:
            graph_model.graph.node.append(onnx.helper.make_node("Identity", [out.name], [want]))
            out.name, renamed = want, True
    if renamed:
        onnx.save(graph_model, str(path))
