"""KCLLoss against a float64 loop reference written from the paper and the official code's
semantics (LTH14/targeted-supcon, moco/builder.py, class KCL with targeted=False), and
its sampled positives with a fixed generator."""

import math

import pytest
import torch
from references import T

from dscl_plugin.functional import kcl_cross_entropy, sample_queue_positives
from dscl_plugin.losses import KCLLoss


def naive_kcl(query, key, queue, positives, temperature=T):
    """Loop reference: for each anchor the logits ``[q.k, q.M_1, ..., q.M_K] / T`` of the
    normalised features, a softmax over all of them, and the mean of ``-log p`` over the
    own key and the marked queue rows; then the mean over anchors."""
    total = 0.0
    for i in range(query.shape[0]):
        q = query[i] / query[i].norm()
        candidates = [key[i] / key[i].norm()] + [row / row.norm() for row in queue]
        logits = [torch.dot(q, c) / temperature for c in candidates]
        log_z = torch.logsumexp(torch.stack(logits), dim=0)
        chosen = [0] + [1 + j for j in range(queue.shape[0]) if positives[i, j]]
        total = total - sum(logits[c] - log_z for c in chosen) / len(chosen)
    return total / query.shape[0]


def _inputs(b, k, d=5, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(b, d, generator=gen, dtype=torch.float64, requires_grad=True)
    key = torch.randn(b, d, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(classes, (b,), generator=gen)
    queue = torch.randn(k, d, generator=gen, dtype=torch.float64, requires_grad=True)
    queue_labels = torch.randint(-1, classes + 1, (k,), generator=gen)  # -1: an unfilled row
    return query, key, labels, queue, queue_labels


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=True)


@pytest.mark.parametrize("num_positive", [0, 1, 2, 6])
@pytest.mark.parametrize("b,k", [(1, 4), (6, 12), (8, 30)])
def test_value_and_gradients_equal_the_loop_reference(num_positive, b, k):
    query, key, labels, queue, queue_labels = _inputs(b, k)
    loss = KCLLoss(num_positive, T, generator=torch.Generator().manual_seed(3))
    value = loss(query, key, labels, queue, queue_labels)
    same_class = labels[:, None] == queue_labels[None, :]
    positives = sample_queue_positives(same_class, num_positive, torch.Generator().manual_seed(3))
    expected = naive_kcl(query, key, queue, positives)
    torch.testing.assert_close(value, expected)
    tensors = (query, key, queue)
    for got, want in zip(_grads(value, tensors), _grads(expected, tensors)):
        torch.testing.assert_close(got, want)


def test_official_edge_cases():
    """A row labelled -1 is never a positive, an anchor whose class has no queue row has
    its own key alone, every row is in the denominator, and an empty queue leaves the own
    key (log p = 0)."""
    query, key, _, queue, _ = _inputs(2, 4)
    labels = torch.tensor([0, 2])
    queue_labels = torch.tensor([-1, 0, -1, 1])
    value = KCLLoss(num_positive=0)(query, key, labels, queue, queue_labels)
    positives = torch.tensor([[False, True, False, False], [False, False, False, False]])
    torch.testing.assert_close(value, naive_kcl(query, key, queue, positives))
    assert KCLLoss()(query, key, labels).item() == 0.0


def test_the_fused_form_in_float32_matches():
    query, key, labels, queue, queue_labels = _inputs(8, 30)
    positives = sample_queue_positives(labels[:, None] == queue_labels[None, :], 2)
    single = [t.detach().float() for t in (query, key, queue)]
    value = kcl_cross_entropy(*single, positives, T)
    torch.testing.assert_close(value.double(), naive_kcl(query, key, queue, positives).detach())


def test_sampling_is_fixed_by_the_generator_and_draws_k_distinct_class_rows():
    gen = torch.Generator().manual_seed(0)
    same_class = torch.rand(16, 40, generator=gen) < 0.3
    one = sample_queue_positives(same_class, 3, torch.Generator().manual_seed(7))
    again = sample_queue_positives(same_class, 3, torch.Generator().manual_seed(7))
    other = sample_queue_positives(same_class, 3, torch.Generator().manual_seed(8))
    assert torch.equal(one, again) and not torch.equal(one, other)
    assert not (one & ~same_class).any()  # only rows of the anchor's class
    assert torch.equal(one.sum(1), same_class.sum(1).clamp(max=3))  # k, or all if fewer
    assert torch.equal(sample_queue_positives(same_class, 0), same_class)  # k = 0: all
    assert torch.equal(sample_queue_positives(same_class, 100), same_class)


def test_sampling_is_uniform_over_the_class_rows():
    same_class = torch.tensor([[True, False, True, True, True, True]])
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_queue_positives(same_class, 2, gen)[0] for _ in range(4000)])
    frequency = draws.double().mean(0)
    assert frequency[1] == 0
    # each of the 5 rows in 2 of 5 draws: binomial std sqrt(0.4 * 0.6 / 4000) = 0.008
    assert torch.allclose(
        frequency[same_class[0]], torch.full((5,), 0.4, dtype=torch.float64), atol=0.03
    )


def test_an_owned_queue_enqueues_after_the_loss_and_bad_inputs_are_named():
    query, key, labels, _, _ = _inputs(4, 0)
    loss_fn = KCLLoss(num_positive=1, memory_bank_size=(8, 5))
    first = loss_fn(query, key, labels)
    assert first.item() == 0.0  # the queue was empty for this step
    assert int(loss_fn.memory_bank.num_filled) == 4
    second = loss_fn(query, key, labels)  # the keys enqueued again before the backward
    assert math.isfinite(second.item()) and second.item() > 0
    second.backward()
    with pytest.raises(ValueError, match="num_positive must be an int >= 0, got -1"):
        KCLLoss(num_positive=-1)
    with pytest.raises(TypeError, match="KCLLoss takes loss.query, key, labels.*no PML form"):
        KCLLoss()(query, labels)
