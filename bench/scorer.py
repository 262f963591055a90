"""Scorer benchmark: sequences/s of the transformer at batch 1, 32, 256 with 100 and 500 candidates,
onnxruntime (fp32, int8) vs torch eager, measured side by side in one run on the same model. Where there is a
GPU: onnxruntime's CUDA provider with plain `run` (the serving path, `OnnxScorer`) and with IOBinding of
host buffers, and torch eager on CUDA, beside the CPU rows of the same run.

Standalone (what bench/gpu.sh runs on a GPU machine): python -m bench.scorer  -> bench/results/scorer-DEVICE.json;
`--batch-path` runs only the state path against the single run -> bench/results/scorer-batch-DEVICE.json
"""
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


def _parity(rows, sessions, n_items: int, max_len: int) -> None:
    """The CUDA provider's scores against the CPU provider's on the same inputs (largest absolute difference)."""
    rng = np.random.default_rng(1)
    feed = {"seq": rng.integers(1, n_items, (32, max_len)), "candidates": rng.integers(1, n_items, (32, 100))}
    cpu, gpu = (sessions[k].run(["scores"], feed)[0] for k in ("ort_fp32", "ort_cuda_fp32"))
    rows.add("scorer_ort_cuda_vs_cpu_max_abs_diff", float(np.abs(cpu - gpu).max()), "abs", batch=32, candidates=100)


def _registered(model, root: Path, n_items: int) -> Path:
    """`model` registered under `root` as `recstream train` registers one (export, parity, registry): its folder."""
    from exporters.pipeline import export_register
    from models.data import Vocab
    from stream.core.storage.registry import Registry
    version, _ = export_register(model, Vocab([f"i{k}" for k in range(1, n_items)]), {"source": "bench"}, root)
    return Registry(root).path(version)


def _serving(rows, model, root: Path, n_items: int, max_len: int, cuda: bool) -> None:
    """The serving path itself (`OnnxScorer.score_many`, what the worker calls) on a version registered
    as `recstream train` registers one, on the CPU provider and, with a GPU, on the provider it picks there."""
    from stream.core.scoring.transformer import OnnxScorer
    d = _registered(model, root, n_items)
    scorers = {"cpu": OnnxScorer(d, providers=["CPUExecutionProvider"])}
    if cuda:
        scorers["cuda"] = OnnxScorer(d)              # no providers given: what a worker on that machine picks
        rows.add("scorer_serving_provider_picked_is_cuda", scorers["cuda"].provider == "CUDAExecutionProvider", "bool")
    rng = np.random.default_rng(2)
    for b in (1, 32, 256):
        seq, cand = rng.integers(1, n_items, (b, max_len)), rng.integers(1, n_items, (b, 100))
        for name, sc in scorers.items():
            rows.add(f"scorer_serving_{name}_b{b}_c100", _rate(lambda: sc.score_many(seq, cand), b), "seq/s",
                     batch=b, candidates=100)
        if cuda and b == 256:
            diff = np.abs(scorers["cpu"].score_many(seq, cand) - scorers["cuda"].score_many(seq, cand)).max()
            rows.add("scorer_serving_cuda_vs_cpu_max_abs_diff", float(diff), "abs", batch=b, candidates=100)
    _batch_path(rows, d, n_items, max_len, cuda)


def _batch_path(rows, d: Path, n_items: int, max_len: int, cuda: bool) -> None:
    """What one worker batch asks of the model: its own top items over a pool of every item it knows
    (the "model" source), then the scores of each user's 100 candidates. The state path (one run for
    the users' last states, then matrix products) against the single run the scorer used before it (the
    graph's `scores` output, run twice), side by side; fresh histories every round."""
    from stream.core.scoring.transformer import OnnxScorer
    pool = np.arange(1, n_items, dtype=np.int64)
    kinds = [("cpu", ["CPUExecutionProvider"])] + ([("cuda", None)] if cuda else [])
    rng = np.random.default_rng(4)
    for name, providers in kinds:
        state = OnnxScorer(d, providers=providers)
        single = OnnxScorer(d, providers=providers)
        single.items = None                           # the graph's own `scores`, as before the state path
        table = np.ascontiguousarray(state.items[pool])
        for b in (1, 32, 256):
            seqs = [rng.integers(1, n_items, (b, max_len)) for _ in range(8)]
            cand = rng.integers(1, n_items, (b, 100))
            times = {"single_run": [], "state": []}
            for r in range(int(max(20, 3000 // b))):   # interleaved, medians: this box's neighbours come and go
                seq = seqs[r % len(seqs)]
                for mode, sc, tab in (("single_run", single, None), ("state", state, table)):
                    sc._states = {}                   # every batch brings new histories
                    t0 = time.perf_counter()
                    sc.score_pool(seq, pool, tab)
                    sc.score_many(seq, cand)
                    times[mode].append(time.perf_counter() - t0)
            rates = {mode: b / float(np.median(ts[1:])) for mode, ts in times.items()}
            for mode, rate in rates.items():
                rows.add(f"scorer_batch_{name}_{mode}_b{b}_pool{len(pool)}", rate, "seq/s", batch=b,
                         pool=len(pool), candidates=100, rounds=len(times[mode]), statistic="median")
            rows.add(f"scorer_batch_{name}_state_vs_single_b{b}", rates["state"] / rates["single_run"], "x", batch=b)


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
            _parity(rows, sessions, n_items, max_len)
        gpu_torch = torch.cuda.is_available()
        model_gpu = SeqRec(model.cfg).eval() if gpu_torch else None
        if gpu_torch:
            model_gpu.load_state_dict(model.state_dict())
            model_gpu = model_gpu.cuda()
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
                if gpu_torch:
                    def eager_cuda():
                        with torch.no_grad():
                            model_gpu(ts.cuda(), tc.cuda()).cpu()      # inputs in, scores out: as served
                    rows.add(f"scorer_torch_cuda_b{b}_c{c}", _rate(eager_cuda, b), "seq/s", batch=b, candidates=c)
                if cuda:
                    sess = sessions["ort_cuda_fp32"]

                    def iobound():
                        io = sess.io_binding()
                        io.bind_cpu_input("seq", seq)
                        io.bind_cpu_input("candidates", cand)
                        io.bind_output("scores")
                        sess.run_with_iobinding(io)
                        io.copy_outputs_to_cpu()
                    rows.add(f"scorer_ort_cuda_iobinding_b{b}_c{c}", _rate(iobound, b), "seq/s", batch=b, candidates=c)
                for name, sess in sessions.items():
                    r = _rate(lambda: sess.run(["scores"], {"seq": seq, "candidates": cand}), b)
                    rows.add(f"scorer_{name}_b{b}_c{c}", r, "seq/s", batch=b, candidates=c)
                    if name == "ort_fp32":
                        rows.add(f"scorer_ort_vs_torch_ratio_b{b}_c{c}", r / r_torch, "x", batch=b, candidates=c)
                        r32 = r
                    if name == "ort_int8":
                        rows.add(f"scorer_int8_vs_fp32_ratio_b{b}_c{c}", r / r32, "x", batch=b, candidates=c)
        _serving(rows, model, Path(tmp) / "registry", n_items, max_len, cuda)
        if not cuda:
            print("  (no CUDA execution provider here: the GPU path is unmeasured on this machine)")


def _batch_path_only(rows, cuda: bool, n_items: int = 5000, max_len: int = 50) -> None:
    import torch

    from models.seqrec import SeqRec, SeqRecConfig
    torch.manual_seed(0)
    model = SeqRec(SeqRecConfig(n_items=n_items, max_len=max_len)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        _batch_path(rows, _registered(model, Path(tmp), n_items), n_items, max_len, cuda)


def main() -> int:
    import json
    import platform
    import sys

    import onnxruntime as ort
    import torch

    from bench.rows import RESULTS, Rows
    gpu = "CUDAExecutionProvider" in ort.get_available_providers()
    rows = Rows({"host": platform.node(), "onnxruntime": ort.__version__, "providers": ort.get_available_providers(),
                 "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None})
    print("== transformer scorer (d=64, 2 layers, T=50, 5000 items)" + (" with the CUDA provider" if gpu else ""))
    name = "scorer"
    if "--batch-path" in sys.argv:        # only the state path against the single run (a short device check)
        name = "scorer-batch"
        _batch_path_only(rows, gpu)
    else:
        run(rows)
    out = RESULTS / f"{name}-{'gpu' if gpu else 'cpu'}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows.rows, indent=2))
    print(f"wrote {out}")
    return 0 if gpu or "--allow-cpu" in sys.argv else 1


if __name__ == "__main__":
    raise SystemExit(main())
