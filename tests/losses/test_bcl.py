"""BCLLoss and LogitAdjustLoss against loop references of the official BalSCL and
LogitAdjust (FlamieZhu/Balanced-Contrastive-Learning, loss/contrastive.py,
loss/logitadjust.py)."""

import pytest
import torch
import torch.nn.functional as F
from references import naive_balscl, naive_logit_adjust

from dscl_plugin.losses import BCLLoss, LogitAdjustLoss

T = 0.1


def _inputs(labels, classes=5, d=6, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    b = len(labels)
    view1 = torch.randn(b, d, generator=gen, dtype=dtype).requires_grad_()
    view2 = torch.randn(b, d, generator=gen, dtype=dtype).requires_grad_()
    prototypes = torch.randn(classes, d, generator=gen, dtype=dtype).requires_grad_()
    return view1, view2, torch.tensor(labels), prototypes


# class 4 is absent from every batch (its prototype alone), class 3 has one image
@pytest.mark.parametrize(
    "labels",
    [[0, 1, 1, 2, 0, 3], [2, 2, 2, 2], [0, 1, 2, 3], [1]],
    ids=["mixed", "one", "each", "b1"],
)
def test_values_and_gradients_match_the_loop_reference(labels):
    view1, view2, labels, prototypes = _inputs(labels)
    loss = BCLLoss(temperature=T)(view1, view2, labels, prototypes)
    ref = naive_balscl(view1, view2, labels, prototypes, T)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    tensors = [view1, view2, prototypes]
    for got, want in zip(torch.autograd.grad(loss, tensors), torch.autograd.grad(ref, tensors)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gradcheck():
    view1, view2, labels, prototypes = _inputs([0, 2, 2, 1], classes=4, d=3, seed=2)

    def fn(a, b, w):
        return BCLLoss(temperature=0.5)(a, b, labels, w)

    assert torch.autograd.gradcheck(fn, (view1, view2, prototypes))


def test_float32_under_autocast_computes_in_float32():
    view1, view2, labels, prototypes = _inputs([0, 1, 1, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = BCLLoss(T)(view1.bfloat16(), view2.bfloat16(), labels, prototypes.float())
    assert loss.dtype == torch.float32
    ref = naive_balscl(
        view1.bfloat16().double(), view2.bfloat16().double(), labels, prototypes.float().double(), T
    )
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)


def test_bcl_bad_inputs_name_the_argument():
    view1, view2, labels, prototypes = _inputs([0, 1, 1, 2])
    loss_fn = BCLLoss()
    with pytest.raises(
        ValueError,
        match=r"labels must be class ids >= 0 and < num_classes \(5\), got ids in \[3, 5\]",
    ):
        loss_fn(view1, view2, labels + 3, prototypes)
    with pytest.raises(ValueError, match=r"prototypes must have the views' feature dimension 6"):
        loss_fn(view1, view2, labels, prototypes[:, :3])
    with pytest.raises(
        ValueError, match=r"view2 must have the shape of view1 \(4, 6\), got \(3, 6\)"
    ):
        loss_fn(view1, view2[:3], labels, prototypes)
    with pytest.raises(ValueError, match=r"labels must have one entry per feature row \(4\)"):
        loss_fn(view1, view2, labels[:2], prototypes)
    with pytest.raises(ValueError, match=r"temperature must be > 0"):
        BCLLoss(temperature=0)


COUNTS = [500, 120, 30, 7, 1]


@pytest.mark.parametrize("tau", [0.0, 1.0, 2.0])
def test_logit_adjust_matches_the_loop_reference(tau):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 5, generator=gen, dtype=torch.float64).requires_grad_()
    labels = torch.tensor([0, 4, 4, 2, 3, 0])
    loss = LogitAdjustLoss(COUNTS, tau=tau)(logits, labels)
    ref = naive_logit_adjust(logits, labels, COUNTS, tau)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    (got,), (want,) = torch.autograd.grad(loss, logits), torch.autograd.grad(ref, logits)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    if tau == 0.0:
        torch.testing.assert_close(loss, F.cross_entropy(logits, labels))


def test_logit_adjust_bad_inputs_name_the_argument():
    with pytest.raises(
        ValueError,
        match=r"class_counts must be > 0 for every class .*got \[0.0\] for classes \[2\]",
    ):
        LogitAdjustLoss([5, 3, 0, 1])
    with pytest.raises(
        ValueError, match=r"class_counts must list the training images of every class"
    ):
        LogitAdjustLoss([])
    with pytest.raises(ValueError, match=r"tau must be >= 0"):
        LogitAdjustLoss(COUNTS, tau=-1)
    loss_fn = LogitAdjustLoss(COUNTS)
    with pytest.raises(ValueError, match=r"logits must have shape \(B, 5\) .*got \(2, 4\)"):
        loss_fn(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must be class ids >= 0 and < num_classes \(5\)"):
        loss_fn(torch.zeros(2, 5), torch.tensor([0, 5]))
