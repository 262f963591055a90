"""The training losses: the full softmax without the seen items (rating logs) against a plain reference."""
import torch

from models.losses import full_softmax_loss, masks_seen, repeat_share
from models.seqrec import SeqRec, SeqRecConfig


def reference(model, x, y, mask_seen):
    """The same loss written the plain way: every position's logits, the items up to it masked by a dense
    cumulative one-hot (its own target never), then the padded positions dropped."""
    logits = model.encode(x) @ model.item_emb.weight.T                     # (B, T, n)
    if mask_seen:
        seen = torch.zeros_like(logits, dtype=torch.bool).scatter(2, x.unsqueeze(-1), True).cummax(dim=1).values
        seen &= ~torch.nn.functional.one_hot(y, logits.shape[-1]).bool()
        logits = logits.masked_fill(seen, -1e9)
    keep = y > 0
    logits = logits[keep]
    logits[:, 0] = -1e9
    return torch.nn.functional.cross_entropy(logits, y[keep])


def test_the_seen_items_leave_the_softmax_and_the_target_stays():
    torch.manual_seed(0)
    model = SeqRec(SeqRecConfig(n_items=40, max_len=8, dim=16, heads=2, layers=1, dropout=0.0)).eval()
    x, y = torch.randint(1, 40, (6, 8)), torch.randint(1, 40, (6, 8))
    x[0, :3] = y[0, :3] = 0                         # a left-padded window
    y[1, 5] = x[1, 2]                               # a repeat: its own target is never masked
    with torch.no_grad():
        for mask in (False, True):
            assert torch.allclose(full_softmax_loss(model, x, y, mask), reference(model, x, y, mask), atol=1e-6)
        masked, plain = full_softmax_loss(model, x, y, True), full_softmax_loss(model, x, y, False)
    assert masked < plain                           # fewer competitors for every target


def test_the_mask_is_chosen_by_the_log_unless_set():
    ratings, shopping = [[1, 2, 3], [2, 4]], [[1, 2, 1, 1], [3, 3]]
    assert repeat_share(ratings) == 0.0 and repeat_share(shopping) == 0.5
    assert masks_seen(None, ratings) and not masks_seen(None, shopping)
    assert masks_seen(True, shopping) and not masks_seen(False, ratings)
