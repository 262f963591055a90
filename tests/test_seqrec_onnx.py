"""The sequence transformer: export parity (torch vs onnxruntime within 1e-4), registry rules,
the serving scorer's id mapping. A tiny model, seconds."""
import numpy as np
import pytest
import torch
from conftest import register_model as register

from exporters.parity import ParityError, check_seqrec_parity
from models.seqrec import SeqRec
from stream.core.candidates import SOURCE_NAMES
from stream.core.scoring import CandidateBatch
from stream.core.scoring.transformer import BlendedScorer, OnnxScorer
from stream.core.storage.registry import RegistryError

W = len(SOURCE_NAMES)


def test_parity_batches_1_7_64_short_and_full(tiny):
    model, path = tiny
    rep = check_seqrec_parity(model, path, batch_sizes=(1, 7, 64), fills=("short", "full"), atol=1e-4)
    assert rep.passed and len(rep.cases) == 12
    assert {(c["batch"], c["fill"]) for c in rep.cases} == {(b, f) for b in (1, 7, 64) for f in ("short", "full")}
    print(f"max abs diff {rep.max_abs_diff:.2e}")
    assert rep.max_abs_diff <= 1e-4


def test_parity_failure_names_cases(tiny):
    model, path = tiny
    other = SeqRec(model.cfg).eval()   # different weights: must fail loudly, naming the cases
    with pytest.raises(ParityError, match=r"batch 1 short C=1: .*e"):
        check_seqrec_parity(other, path, batch_sizes=(1,), fills=("short",), n_candidates=(1,))


def test_padding_only_history_is_finite(tiny):
    model, _ = tiny
    with torch.no_grad():
        out = model(torch.zeros((2, model.cfg.max_len), dtype=torch.long), torch.tensor([[1, 2], [3, 4]]))
    assert torch.isfinite(out).all()


def test_registry_refuses_failed_parity_and_promotes(tiny, tmp_path):
    model, path = tiny
    with pytest.raises(RegistryError, match="parity"):
        register(tmp_path, model, path, passed=False)
    reg, v1 = register(tmp_path, model, path)
    _, v2 = register(tmp_path, model, path)
    assert [m["version"] for m in reg.versions()] == [v1, v2] and v1.startswith("v1-") and v2.startswith("v2-")
    assert reg.promoted() is None
    reg.promote(v2)
    assert reg.promoted() == v2
    with pytest.raises(RegistryError, match="no version"):
        reg.promote("v9-nothere")


def test_onnx_scorer_maps_ids_and_leaves_unknown_items_unscored(tiny, tmp_path):
    model, path = tiny
    reg, v = register(tmp_path, model, path)
    scorer = OnnxScorer(reg.path(v))
    assert scorer.provider == "CPUExecutionProvider" and scorer.version == v
    # its thread pool sleeps between runs (a spinning pool took a second core from every other process)
    assert scorer.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    batch = CandidateBatch(["u1", "u2"], [["i3", "zzz", "i5"], ["i7"]],
                           [np.ones((3, W)), np.ones((1, W))], [["i2", "i1"], []])
    got = scorer.predict(batch)
    assert np.isnan(got[0][1]) and np.isfinite(got[0][[0, 2]]).all() and np.isfinite(got[1]).all()
    with torch.no_grad():
        seq = torch.zeros((1, model.cfg.max_len), dtype=torch.long)
        seq[0, -2:] = torch.tensor([1, 2])          # oldest first: i1 then i2
        want = model(seq, torch.tensor([[3, 5]])).numpy()[0]
    np.testing.assert_allclose(got[0][[0, 2]], want, atol=1e-4)
    blend = BlendedScorer(scorer).score(batch)
    assert set(blend.components) == {"fallback", "transformer", "blend"} and blend.rows is None
    assert np.isfinite(blend.final[0]).all() and blend.final is blend.components["blend"]


def test_onnxruntime_errors_become_model_errors(tiny, tmp_path):
    from stream.errors import ModelError
    model, path = tiny
    reg, v = register(tmp_path, model, path)
    scorer = OnnxScorer(reg.path(v))
    with pytest.raises(ModelError, match=v):
        scorer.score_many(np.zeros((1, 3), dtype=np.int32), np.zeros((1, 2), dtype=np.int64))   # wrong dtype


def test_state_path_gives_the_single_run_scores_and_legacy_exports_still_serve(tiny, tmp_path):
    """The export's `state`/`items` outputs: the server's dot products equal the graph's own `scores`
    (one run per distinct history, remembered for the batch's second use); a version exported before the
    state path (output `scores` only) is served through the single run, with the same numbers."""
    model, path = tiny
    legacy = tmp_path / "legacy.onnx"
    T = model.cfg.max_len
    torch.onnx.export(model, (torch.randint(1, 60, (2, T)), torch.randint(1, 60, (2, 7))), str(legacy),
                      dynamo=False, opset_version=17, input_names=["seq", "candidates"], output_names=["scores"],
                      dynamic_axes={"seq": {0: "batch"}, "candidates": {0: "batch", 1: "n"}, "scores": {0: "batch", 1: "n"}})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    reg_a, va = register(tmp_path / "a", model, path)
    reg_b, vb = register(tmp_path / "b", model, legacy)
    new, old = OnnxScorer(reg_a.path(va)), OnnxScorer(reg_b.path(vb))
    assert new.items is not None and new.items.shape == (60, model.cfg.dim) and old.items is None
    rng = np.random.default_rng(3)
    seq = rng.integers(0, 60, (9, T)).astype(np.int64)
    cand = rng.integers(1, 60, (9, 40)).astype(np.int64)
    np.testing.assert_allclose(new.score_many(seq, cand), old.score_many(seq, cand), atol=1e-5)
    assert len(new._states) == 9
    pool = np.arange(1, 60, dtype=np.int64)
    np.testing.assert_allclose(new.score_pool(seq, pool), old.score_pool(seq, pool), atol=1e-5)
    assert len(new._states) == 9                    # the same histories: no second run


def test_short_histories_run_with_their_padding_cut_off(tiny, tmp_path):
    """The export's history axis is dynamic and positions count from the newest item: a left-padded history
    gives the same state with its leading padding cut off (torch and onnxruntime), and the scorer runs each
    length bucket that way; a fixed-axis export is run at full length as before."""
    model, path = tiny
    T = model.cfg.max_len
    rng = np.random.default_rng(5)
    seq = np.zeros((20, T), np.int64)
    for r in range(20):
        n = int(rng.integers(0, T + 1))
        if n:
            seq[r, T - n:] = rng.integers(1, 60, n)
    with torch.no_grad():
        full = model.state(torch.from_numpy(seq))
        short = model.state(torch.from_numpy(seq[:5, T - 4:]))     # rows 0-4 cut to their last 4 positions
    long_enough = (seq[:5, : T - 4] == 0).all(axis=1)
    np.testing.assert_allclose(short.numpy()[long_enough], full.numpy()[:5][long_enough], atol=1e-5)
    reg, v = register(tmp_path, model, path)
    scorer = OnnxScorer(reg.path(v))
    assert scorer.trim
    whole = scorer._run(["state"], seq, np.zeros((20, 1), np.int64))[0]
    np.testing.assert_allclose(scorer._fresh_states(seq), whole, atol=1e-5)
    np.testing.assert_allclose(whole, full.numpy(), atol=1e-4)
    fixed = tmp_path / "fixed.onnx"
    axes = {"seq": {0: "batch"}, "candidates": {0: "batch", 1: "n"}, "scores": {0: "batch", 1: "n"}}
    torch.onnx.export(model, (torch.randint(1, 60, (2, T)), torch.randint(1, 60, (2, 7))), str(fixed),
                      dynamo=False, opset_version=17, input_names=["seq", "candidates"], output_names=["scores"],
                      dynamic_axes=axes)
    (tmp_path / "f").mkdir()
    reg_f, vf = register(tmp_path / "f", model, fixed)
    assert not OnnxScorer(reg_f.path(vf)).trim
