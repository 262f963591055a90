"""onnxruntime sessions for the serving path (the transformer scorer and the text encoder): the CUDA
execution provider when onnxruntime-gpu and a GPU are present, the CPU one otherwise."""
from __future__ import annotations


def open_session(path, providers: list[str] | None = None):
    """An onnxruntime session on the CUDA execution provider when onnxruntime-gpu and a GPU are there,
    else the CPU one (full graph optimisation); returns (session, the providers available)."""
    import onnxruntime as ort
    available = ort.get_available_providers()
    if providers is None:
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available
                     else ["CPUExecutionProvider"])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # the intra-op pool's threads sleep between runs instead of spinning: the MovieLens backtest in 0.45x the
    # CPU at the same wall clock, two backtest processes at once 1.77x faster than in turn (1.10x spinning),
    # the worker's catch-up level (docs/benchmarks.md, thirty-seventh session); the same scores bit for bit
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers), available
