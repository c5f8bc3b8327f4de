"""TSCLoss against a loop reference of the official TSC (LTH14/targeted-supcon,
moco/builder.py, KCL(targeted=True)): centroids, matching, drawn positives, the target
columns and the shared normalisation of loss_class + tw * loss_target, and the two parts."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from references import naive_kcl, naive_kcl_parts

from dscl_plugin.functional.sampling import sample_class_pool
from dscl_plugin.losses import KCLLoss, TSCLoss

T, C, D = 0.2, 4, 5


def _inputs(b=6, k=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(b, D, generator=gen, dtype=torch.float64).requires_grad_()
    key = torch.randn(b, D, generator=gen, dtype=torch.float64).requires_grad_()
    labels = torch.tensor([0, 1, 1, 2, 0, 1])[:b]  # class 3 is absent from the batch
    queue = torch.randn(k, D, generator=gen, dtype=torch.float64).requires_grad_()
    queue_labels = torch.randint(-1, C, (k,), generator=gen)  # -1: empty slots
    return query, key, labels, queue, queue_labels


def _expected_centroids(centroids, query, labels):
    """The official per-class update, one class at a time."""
    q = F.normalize(query.detach(), dim=1)
    out = centroids.clone()
    for c in labels.unique().tolist():
        mean = F.normalize(q[labels == c].mean(dim=0), dim=0)
        out[c] = F.normalize(0.9 * out[c] + 0.1 * mean, dim=0)
    return out


def _brute_force_assignment(centroids, targets):
    similarity = centroids @ targets.T
    perms = itertools.permutations(range(len(targets)))
    return max(perms, key=lambda p: sum(similarity[c, t].item() for c, t in enumerate(p)))


TW = 0.5
CASES = [(k, r, s) for k, r in [(0, 1), (2, 1), (6, 2), (3, 3)] for s in (True, False)]


def _step_and_reference(k, repeat, separate):
    """A training step of TSCLoss (``tw = TW``), the centroids it should leave and the
    arguments of :func:`naive_kcl_parts` for it: brute-force matching and the same draws."""
    query, key, labels, queue, queue_labels = _inputs(seed=k + repeat)
    loss_fn = TSCLoss(
        C,
        D,
        num_positives=k,
        temperature=T,
        target_weight=TW,
        target_repeat=repeat,
        separate_targets=separate,
        generator=torch.Generator().manual_seed(7),
    ).double()
    centroids = _expected_centroids(loss_fn.centroids, query, labels)
    targets = loss_fn.targets.clone()
    loss = loss_fn(query, key, labels, queue, queue_labels)

    assignment = _brute_force_assignment(centroids, targets)
    own_targets = [[assignment[y] * repeat + r for r in range(repeat)] for y in labels.tolist()]
    shared = k > 0 and not separate
    if k == 0:
        rows = [torch.nonzero(queue_labels == y).flatten().tolist() for y in labels.tolist()]
    else:
        gen = torch.Generator().manual_seed(7)
        draw = sample_class_pool(labels, queue_labels, k, repeat if shared else 0, gen)
        rows = [r[v].tolist() for r, v in zip(draw.rows, draw.in_rows)]
        if shared:  # the drawn target copies only
            drawn = [e[v & ~q].tolist() for e, v, q in zip(draw.extra, draw.valid, draw.in_rows)]
            own_targets = [[own[e] for e in d] for own, d in zip(own_targets, drawn)]
    repeated = targets.repeat_interleave(repeat, dim=0)
    return loss_fn, loss, centroids, (query, key, queue, rows, T, repeated, own_targets)


@pytest.mark.parametrize("k, repeat, separate", CASES)
def test_values_and_gradients_match_the_loop_reference(k, repeat, separate):
    loss_fn, loss, centroids, reference = _step_and_reference(k, repeat, separate)
    torch.testing.assert_close(loss_fn.centroids, centroids, rtol=1e-12, atol=1e-14)
    ref = naive_kcl(*reference, tw=TW)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    query, key, queue = reference[:3]
    got = torch.autograd.grad(loss, [query, key, queue])
    want = torch.autograd.grad(ref, [query, key, queue])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k, repeat, separate", CASES)
def test_the_class_and_target_parts_match_the_loop_reference_and_make_the_loss(k, repeat, separate):
    loss_fn, loss, _, reference = _step_and_reference(k, repeat, separate)
    class_ref, target_ref = (part.mean() for part in naive_kcl_parts(*reference))
    class_loss, target_loss = loss_fn.parts
    assert target_ref > 0 and class_ref > 0  # the targets are positives
    torch.testing.assert_close(class_loss, class_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(target_loss, target_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(class_loss + TW * target_loss, loss.detach(), rtol=1e-15, atol=0)
    assert not class_loss.requires_grad and not target_loss.requires_grad
    assert class_loss.dtype == target_loss.dtype == torch.float64 and class_loss.ndim == 0


def test_eval_and_no_grad_calls_leave_the_centroids():
    query, key, labels, queue, queue_labels = _inputs(seed=1)
    loss_fn = TSCLoss(C, D, num_positives=0)
    before = loss_fn.centroids.clone()
    with torch.no_grad():
        loss_fn(query.float(), key.float(), labels, queue.float(), queue_labels)
    loss_fn.eval()
    loss_fn(query.float(), key.float(), labels, queue.float(), queue_labels)
    assert torch.equal(loss_fn.centroids, before)
    loss_fn.train()
    loss_fn(query.float(), key.float(), labels, queue.float(), queue_labels)
    assert not torch.equal(loss_fn.centroids, before)
    assert torch.equal(loss_fn.centroids[3], before[3])  # class 3: no anchor


def test_untargeted_is_kcl_and_leaves_the_centroids():
    query, key, labels, queue, queue_labels = _inputs(seed=3)
    tsc = TSCLoss(C, D, 2, T, generator=torch.Generator().manual_seed(5), targeted=False)
    kcl = KCLLoss(2, T, generator=torch.Generator().manual_seed(5))
    before = tsc.centroids.clone()
    loss = tsc(query, key, labels, queue, queue_labels)  # a training step
    assert torch.equal(loss, kcl(query, key, labels, queue, queue_labels))
    assert torch.equal(tsc.centroids, before)
    with pytest.raises(ValueError, match=r"labels must be class ids >= 0 and < num_classes \(4\)"):
        tsc(query, key, labels + 2, queue, queue_labels)
    tsc.targeted = True  # the official switch after the warm-up
    tsc(query, key, labels, queue, queue_labels)
    assert not torch.equal(tsc.centroids, before)


def test_untargeted_the_class_part_is_the_whole_loss():
    query, key, labels, queue, queue_labels = _inputs(seed=4)
    tsc = TSCLoss(C, D, 2, T, target_weight=TW, targeted=False)
    assert tsc.parts is None
    loss = tsc(query, key, labels, queue, queue_labels)
    assert torch.equal(tsc.parts.class_loss, loss.detach())
    assert torch.equal(tsc.parts.target_loss, torch.zeros((), dtype=torch.float64))
    per_anchor = tsc.anchor_losses(query, key, labels, queue, queue_labels)  # kept too
    assert torch.equal(tsc.parts.class_loss, per_anchor.detach().mean())


def test_targets_and_centroids_are_saved_with_the_state_dict():
    loss_fn = TSCLoss(C, D, seed=1)
    state = loss_fn.state_dict()
    assert set(state) == {"targets", "centroids"}
    other = TSCLoss(C, D, seed=2)
    assert not torch.equal(other.targets, loss_fn.targets)
    other.load_state_dict(state)
    assert torch.equal(other.targets, loss_fn.targets)
    assert torch.equal(other.centroids, loss_fn.centroids)


def test_bad_inputs_name_the_argument():
    query, key, labels, queue, queue_labels = _inputs(seed=2)
    loss_fn = TSCLoss(C, D)
    with pytest.raises(ValueError, match=r"labels must be class ids >= 0 and < num_classes \(4\)"):
        loss_fn(query, key, labels + 2, queue, queue_labels)
    with pytest.raises(
        ValueError, match=r"query must have the targets' dimension dim=3, got shape \(6, 5\)"
    ):
        TSCLoss(C, 3)(query, key, labels, queue, queue_labels)
    with pytest.raises(ValueError, match=r"num_classes must be an int >= 1, got 0"):
        TSCLoss(0, D)
    with pytest.raises(ValueError, match=r"target_repeat must be an int >= 1, got 0"):
        TSCLoss(C, D, target_repeat=0)
    with pytest.raises(ValueError, match=r"target_weight must be >= 0, got -1"):
        TSCLoss(C, D, target_weight=-1)
    with pytest.raises(ValueError, match=r"memory_bank_size must hold at least num_positives"):
        TSCLoss(C, D, num_positives=6, memory_bank_size=(2, D))
