"""Text-encoder benchmark: sentences/s of all-MiniLM-L6-v2 at batch 1 and 64, onnxruntime (the
exported graph + the `tokenizers` library, as the worker runs it) vs torch eager (sentence-
transformers), measured side by side in one run on the same titles; plus the content index's
exact search at 100k items (one query, and a batch of 256 users as one matrix product)."""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from bench.scorer import _rate

TITLES = ["Salomon trail running shoes", "stainless steel kitchen knife set 6 pieces",
          "Toy Story (1995) Animation Children's Comedy", "electronics > smartphone | samsung",
          "wireless noise cancelling over-ear headphones", "apparel > shoes > keds | keds",
          "espresso coffee machine 15 bar", "Blade Runner (1982) Film-Noir Sci-Fi"]


def run(rows) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    from exporters.encoder import default_source, export_encoder
    from stream.core.content import ContentEncoder, ContentIndex
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        m = export_encoder(tmp)
        rows.add("encoder_parity_max_abs_diff", m["parity"]["max_abs_diff"], "abs")
        enc = ContentEncoder(tmp, max_batch=64)
        st = SentenceTransformer(default_source(), device="cpu")
        for b in (1, 64):
            batch = [TITLES[i % len(TITLES)] + f" {i}" for i in range(b)]
            r_ort = _rate(lambda: enc.encode(batch), b)
            r_torch = _rate(lambda: st.encode(batch, batch_size=b, normalize_embeddings=True), b)
            rows.add(f"encoder_ort_b{b}", r_ort, "sentences/s", batch=b, provider=enc.provider)
            rows.add(f"encoder_torch_eager_b{b}", r_torch, "sentences/s", batch=b)
            rows.add(f"encoder_ort_vs_torch_ratio_b{b}", r_ort / r_torch, "x", batch=b)
    rng = np.random.default_rng(0)
    n, dim = 100_000, 384
    idx = ContentIndex(dim, n)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    idx.add([f"i{j}" for j in range(n)], vecs)
    for q in (1, 256):
        qs = vecs[:q]
        t0 = time.perf_counter()
        reps = 0
        while time.perf_counter() - t0 < 1.0:
            idx.search(qs, 30)
            reps += 1
        ms = (time.perf_counter() - t0) / reps * 1000
        rows.add(f"content_index_exact_100k_search_ms_q{q}", ms, "ms", items=n, queries=q, memory_mb=round(n * dim * 4 / 2**20))
