"""A SeqRec ensemble (`recstream train --members N`): the mean of its members' scores, served through the
same ONNX graph and state path as one model, saved and warm-started member by member."""
import numpy as np
import pytest
import torch
from conftest import register_model as register
from test_train import synth_interactions

from exporters.onnx import export_seqrec
from exporters.parity import check_seqrec_parity
from models import parallel
from models.data import Interaction, Vocab
from models.retrain import grow_model, load_checkpoint, retrain, save_checkpoint
from models.seqrec import SeqRec, SeqRecConfig, SeqRecEnsemble
from models.train import TrainConfig, _fit, train
from stream.core.scoring.transformer import OnnxScorer

SMALL = dict(max_len=8, dim=16, layers=1, heads=1)


def _pair(n_items=40):
    torch.manual_seed(0)
    a, b = SeqRec(SeqRecConfig(n_items=n_items, **SMALL)), SeqRec(SeqRecConfig(n_items=n_items, **SMALL))
    return a.eval(), b.eval(), SeqRecEnsemble([a, b]).eval()


def test_ensemble_scores_are_the_members_mean_and_serve_through_the_state_path(tmp_path):
    a, b, ens = _pair()
    seq, cand = torch.randint(1, 40, (5, 8)), torch.randint(1, 40, (5, 9))
    with torch.no_grad():
        torch.testing.assert_close(ens(seq, cand), (a(seq, cand) + b(seq, cand)) / 2, atol=1e-6, rtol=0)
    path = export_seqrec(ens, tmp_path / "model.onnx")
    assert check_seqrec_parity(ens, path).passed
    reg, version = register(tmp_path, ens, path)
    scorer = OnnxScorer(reg.path(version))
    assert scorer.items.shape == (40, 2 * 16)          # the members' tables side by side
    got = scorer.score_many(seq.numpy(), cand.numpy())
    np.testing.assert_allclose(got, ((a(seq, cand) + b(seq, cand)) / 2).detach().numpy(), atol=1e-5)


def test_checkpoint_round_trip_and_warm_start_keep_every_member(tmp_path):
    a, b, ens = _pair(n_items=3)
    save_checkpoint(ens, tmp_path / "model.pt")
    back = load_checkpoint(tmp_path / "model.pt")
    assert isinstance(back, SeqRecEnsemble) and len(back.members) == 2
    for m, old in zip(back.members, (a, b)):
        assert torch.equal(m.item_emb.weight, old.item_emb.weight)
    grown = grow_model(back, 4)
    assert [m.item_emb.weight.shape for m in grown.members] == [(4, 16), (4, 16)]
    assert all(torch.equal(g.item_emb.weight[:3], m.item_emb.weight) for g, m in zip(grown.members, back.members))
    evs = [Interaction(f"u{u}", it, u * 10 + j) for u in range(30) for j, it in enumerate("abzab")]
    model, vocab, rep = retrain(evs, TrainConfig(seed=1, **SMALL), init=(back, Vocab(["a", "b"])), warm_epochs=1,
                                log=lambda *_: None)
    assert isinstance(model, SeqRecEnsemble) and rep["new_items"] == 1 and len(vocab) == 4
    assert all(not torch.equal(m.item_emb.weight[:3], old.item_emb.weight)
               for m, old in zip(model.members, back.members))


def test_members_train_with_their_own_seeds_and_the_first_is_the_single_model():
    events = synth_interactions()
    small = dict(epochs=2, patience=5, negatives=32, seed=3, **{**SMALL, "max_len": 10})
    one, _, rep1, _ = train(events, TrainConfig(**small), progress=False, log=lambda *_: None)
    two, _, rep2, _ = train(events, TrainConfig(**small, members=2), progress=False, log=lambda *_: None)
    assert isinstance(two, SeqRecEnsemble) and len(two.members) == 2
    torch.testing.assert_close(two.members[0].state_dict(), one.state_dict(), atol=0, rtol=0)
    assert not torch.equal(two.members[1].item_emb.weight, one.item_emb.weight)
    assert rep2["best_epoch"] == rep1["best_epoch"] and 0.0 <= rep2["val_ndcg@10"] <= 1.0


def test_members_trained_at_once_are_the_members_trained_in_turn(monkeypatch):
    """Child processes, one member each (models/parallel.py): the same weights bit for bit, the fine-tuning at
    once too."""
    if not parallel.runs_at_once(2):
        pytest.skip("one core (or a GPU): the members train in turn")
    events = synth_interactions()
    cfg = TrainConfig(epochs=3, patience=3, negatives=32, seed=3, members=2, **{**SMALL, "max_len": 10})
    at_once, _, rep, _ = train(events, cfg, progress=False, log=lambda *_: None)
    monkeypatch.setattr(parallel, "runs_at_once", lambda n: False)
    in_turn, _, rep_in_turn, _ = train(events, cfg, progress=False, log=lambda *_: None)
    assert rep["best_epoch"] == rep_in_turn["best_epoch"]
    for a, b in zip(at_once.members, in_turn.members, strict=True):
        torch.testing.assert_close(a.state_dict(), b.state_dict(), atol=0, rtol=0)


def test_the_state_after_epoch_k_of_a_longer_run_is_a_k_epoch_run():
    """What lets the other members train at once: the first member's best epoch is picked from their states."""
    seqs = [[1 + (u + j) % 30 for j in range(12)] for u in range(40)]
    vocab = Vocab([f"i{i}" for i in range(1, 31)])
    cfg = TrainConfig(negatives=8, seed=5, **{**SMALL, "max_len": 10})
    states = []
    _fit(seqs, vocab, cfg, True, epochs=4, progress=False, states=states)
    two, *_ = _fit(seqs, vocab, cfg, True, epochs=2, progress=False)
    assert len(states) == 4
    torch.testing.assert_close(states[1], two.state_dict(), atol=0, rtol=0)
    assert not torch.equal(states[3]["item_emb.weight"], two.item_emb.weight)


def test_members_train_in_turn_where_their_kept_states_would_not_fit(monkeypatch):
    """A catalogue of millions of items: the other members' per-epoch states would take more than a GiB."""
    model = SeqRec(SeqRecConfig(n_items=3, **SMALL))
    started = []
    monkeypatch.setattr(parallel, "runs_at_once", lambda n: True)
    monkeypatch.setattr(parallel, "fit_all", lambda jobs: started.append(jobs) or
                        [(model, 0.5, 2, [model.state_dict()] * 20)] * len(jobs))
    monkeypatch.setattr(parallel, "_run", lambda threads, job: (model, 0.5, 2, None))
    cfg = TrainConfig(epochs=20, members=2, dim=64, layers=2)
    parallel.fit_members([], Vocab([f"i{i}" for i in range(5_000_000)]), cfg, False, None, False, print)
    assert [job["epochs"] for job in started[0]] == [2]              # the other member after the first, its best
    parallel.fit_members([], Vocab([f"i{i}" for i in range(1_000)]), cfg, False, None, False, print)
    assert [job.get("keep_states") for job in started[1]] == [None, True]   # at once, states kept
