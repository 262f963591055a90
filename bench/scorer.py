"""Scorer benchmark: sequences/s of the transformer at batch 1, 32, 256 with 100 and 500 candidates,
onnxruntime (fp32, int8) vs torch eager, measured side by side in one run on the same model."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def _rate(fn, batch: int, min_s: float = 0.6) -> float:
    fn()   # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_s:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def run(rows, n_items: int = 5000, max_len: int = 50) -> None:
    import onnxruntime as ort
    import torch

    from exporters.onnx import export_seqrec
    from exporters.quantize import quantize_int8
    from models.seqrec import SeqRec, SeqRecConfig

    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = SeqRec(SeqRecConfig(n_items=n_items, max_len=max_len)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_seqrec(model, Path(tmp) / "m.onnx")
        int8 = quantize_int8(fp32, Path(tmp) / "m.int8.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        sessions = {"ort_fp32": ort.InferenceSession(str(fp32), opts, providers=["CPUExecutionProvider"]),
                    "ort_int8": ort.InferenceSession(str(int8), opts, providers=["CPUExecutionProvider"])}
        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if cuda:
            sessions["ort_cuda_fp32"] = ort.InferenceSession(str(fp32), providers=["CUDAExecutionProvider"])
        rng = np.random.default_rng(0)
        for c in (100, 500):
            for b in (1, 32, 256):
                seq = rng.integers(1, n_items, (b, max_len))
                cand = rng.integers(1, n_items, (b, c))
                ts, tc = torch.from_numpy(seq), torch.from_numpy(cand)

                def eager():
                    with torch.no_grad():
                        model(ts, tc)
                r_torch = _rate(eager, b)
                rows.add(f"scorer_torch_eager_b{b}_c{c}", r_torch, "seq/s", batch=b, candidates=c)
                for name, sess in sessions.items():
                    r = _rate(lambda: sess.run(["scores"], {"seq": seq, "candidates": cand}), b)
                    rows.add(f"scorer_{name}_b{b}_c{c}", r, "seq/s", batch=b, candidates=c)
                    if name == "ort_fp32":
                        rows.add(f"scorer_ort_vs_torch_ratio_b{b}_c{c}", r / r_torch, "x", batch=b, candidates=c)
                        r32 = r
                    if name == "ort_int8":
                        rows.add(f"scorer_int8_vs_fp32_ratio_b{b}_c{c}", r / r32, "x", batch=b, candidates=c)
        if not cuda:
            print("  (no CUDA execution provider here: the GPU path is unmeasured on this machine)")
