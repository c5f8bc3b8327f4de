"""PaCoLoss against a loop reference of the official PaCoLoss
(dvlab-research/Parametric-Contrastive-Learning, PaCo/LT/losses.py, contrast set of
PaCo/LT/moco/builder.py): class logits with the log prior, self excluded, gamma in the
denominator, beta and alpha on the positives."""

import pytest
import torch
import torch.nn.functional as F
from references import naive_paco

from dscl_plugin.losses import PaCoLoss

COUNTS = [400, 90, 12, 3, 1]
T = 0.2


def _inputs(b=6, k=10, d=5, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(b, d, generator=gen, dtype=dtype).requires_grad_()
    key = torch.randn(b, d, generator=gen, dtype=dtype).requires_grad_()
    labels = torch.tensor([0, 1, 1, 2, 0, 3])[:b]  # class 4 is absent from the batch
    logits = torch.randn(b, len(COUNTS), generator=gen, dtype=dtype).requires_grad_()
    queue = torch.randn(k, d, generator=gen, dtype=dtype).requires_grad_()
    queue_labels = torch.randint(-1, len(COUNTS), (k,), generator=gen)  # -1: empty slots
    return query, key, labels, logits, queue, queue_labels


PARAMS = [
    dict(alpha=0.05, beta=1.0, gamma=1.0),  # official ImageNet-LT
    dict(alpha=1.0, beta=1.0, gamma=1.0),  # official argparse defaults
    dict(alpha=0.3, beta=2.0, gamma=0.5, base_temperature=0.07, supt=0.5),
    dict(alpha=0.2, beta=1.0, gamma=0.0),  # contrastive entries only as positives
]


@pytest.mark.parametrize("params", PARAMS, ids=["imagenet", "defaults", "all", "gamma0"])
@pytest.mark.parametrize("with_queue", [True, False])
def test_values_and_gradients_match_the_loop_reference(params, with_queue):
    query, key, labels, logits, queue, queue_labels = _inputs(seed=len(params))
    if not with_queue:
        queue = queue_labels = None
    supt = params.get("supt", 1.0)
    options = {k: v for k, v in params.items() if k != "supt"}
    loss_fn = PaCoLoss(COUNTS, temperature=T, supervised_temperature=supt, **options)
    loss = loss_fn(query, key, labels, logits, queue, queue_labels)
    ref = naive_paco(
        query, key, labels, logits, queue, queue_labels, COUNTS, temperature=T, supt=supt, **options
    )
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    tensors = [query, key, logits] + ([queue] if with_queue else [])
    for got, want in zip(torch.autograd.grad(loss, tensors), torch.autograd.grad(ref, tensors)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gradcheck():
    query, key, labels, logits, queue, queue_labels = _inputs(b=4, k=5, d=3, seed=9)

    def fn(q, k, z, m):
        return PaCoLoss(COUNTS, alpha=0.4, gamma=0.7, temperature=0.5)(
            q, k, labels, z, m, queue_labels
        )

    assert torch.autograd.gradcheck(fn, (query, key, logits, queue))


def test_float32_and_unit_queue_match_the_float64_reference():
    query, key, labels, logits, queue, queue_labels = _inputs(seed=3)
    unit = F.normalize(queue.detach(), dim=1)
    loss = PaCoLoss(COUNTS, temperature=T)(
        query.float(),
        key.float(),
        labels,
        logits.float(),
        unit.float(),
        queue_labels,
        queue_normalized=True,
    )
    assert loss.dtype == torch.float32
    ref = naive_paco(query, key, labels, logits, queue, queue_labels, COUNTS, 0.05, 1.0, 1.0, T)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)


def test_bad_inputs_name_the_argument():
    query, key, labels, logits, queue, queue_labels = _inputs(seed=4)
    loss_fn = PaCoLoss(COUNTS)
    with pytest.raises(ValueError, match=r"labels must be class ids >= 0 and < num_classes \(5\)"):
        loss_fn(query, key, labels + 2, logits, queue, queue_labels)
    with pytest.raises(
        ValueError, match=r"class_logits must have shape \(B, C\) = \(6, 5\) .*got \(6, 4\)"
    ):
        loss_fn(query, key, labels, logits[:, :4], queue, queue_labels)
    with pytest.raises(
        ValueError, match=r"class_counts must be > 0 for every class .*classes \[1\]"
    ):
        PaCoLoss([3, 0, 2])
    with pytest.raises(ValueError, match=r"class_counts must list the training images"):
        PaCoLoss([])
    with pytest.raises(ValueError, match=r"beta must be > 0"):
        PaCoLoss(COUNTS, beta=0)
    with pytest.raises(ValueError, match=r"gamma must be >= 0"):
        PaCoLoss(COUNTS, gamma=-1)
