"""MultiModN head: per-item skipping, per-step predictions, shuffled order, step loss and state penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from omnibind.fusion.sequential import SequentialFusion

MODS = ("image", "audio", "text")


def _head(**kw: object) -> SequentialFusion:
    torch.manual_seed(0)
    return SequentialFusion(MODS, dim=4, num_classes=3, state=8, hidden=8, **kw)


def _z(b: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {m: torch.randn(b, 4, generator=g) for m in MODS}


def test_an_item_skips_its_absent_modality_while_others_in_the_batch_use_it() -> None:
    head = _head().eval()
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=torch.bool)
    out = head(_z(), present)
    assert out.step_logits is not None and out.step_mask is not None
    assert out.step_logits.shape == (4, 4, 3) and out.step_order == MODS
    # Item 1 lacks audio (step 2): its prediction does not move at that step; item 0's does.
    assert torch.equal(out.step_logits[1, 2], out.step_logits[1, 1])
    assert not torch.equal(out.step_logits[0, 2], out.step_logits[0, 1])
    # Item 2 has only text: identical to running it alone, and its first steps are the prior.
    assert torch.equal(out.step_logits[2, 0], out.step_logits[2, 2])
    alone = head({m: v[2:3] for m, v in _z().items()}, present[2:3])
    assert torch.allclose(alone.logits, out.logits[2:3], atol=1e-6)
    assert out.step_mask.tolist() == [
        [True, True, True, True],
        [True, True, False, True],
        [True, False, False, True],
        [True, True, True, False],
    ]
    assert torch.equal(out.logits, out.step_logits[:, -1])


def test_shuffled_order_changes_per_batch_in_training_and_is_fixed_in_eval() -> None:
    head = _head(order="shuffle")
    present = torch.ones(4, 3, dtype=torch.bool)
    torch.manual_seed(3)
    orders = {head.train()(_z(), present).step_order for _ in range(20)}
    assert len(orders) > 1 and all(sorted(o) == sorted(MODS) for o in orders)
    assert head.eval()(_z(), present).step_order == MODS


def test_step_loss_averages_the_real_steps_and_adds_the_penalty() -> None:
    head = _head(state_penalty=0.5).eval()
    present = torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=torch.bool)
    out = head(_z(2), present)
    y = torch.tensor([0, 2])
    ce = lambda lg, t: F.cross_entropy(lg, t, reduction="none")  # noqa: E731
    steps = torch.stack([ce(out.step_logits[:, s], y) for s in range(4)], 1)  # [B, S]
    mask = out.step_mask.float()
    expected = ((steps * mask).sum(1) / mask.sum(1)).mean() + out.aux_loss
    assert torch.allclose(head.loss(out, y, ce), expected)
    assert out.aux_loss is not None and float(out.aux_loss.detach()) > 0
    last_only = _head(step_loss=False).eval()
    o2 = last_only(_z(2), present)
    assert torch.allclose(last_only.loss(o2, y, ce), ce(o2.logits, y).mean() + o2.aux_loss)
