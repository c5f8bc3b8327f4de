"""DSCLLoss, SupConLoss and PBSDLoss against naive references written with explicit loops."""

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from pytorch_metric_learning import losses as pml_losses
from references import T, naive_contrastive, naive_pbsd

from dscl_plugin.losses import DSCLLoss, PBSDLoss, SupConLoss
from dscl_plugin.losses.contrastive import alpha_from
from dscl_plugin.memory import owns_queue


def _inputs(b, k, d=6, classes=3, dtype=torch.float64, seed=0, grad=True):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(b, d, generator=gen, dtype=dtype).requires_grad_(grad)
    key = torch.randn(b, d, generator=gen, dtype=dtype).requires_grad_(grad)
    labels = torch.randint(classes, (b,), generator=gen)
    queue = queue_labels = None
    if k is not None:
        queue = torch.randn(k, d, generator=gen, dtype=dtype).requires_grad_(grad)
        queue_labels = torch.randint(classes + 1, (k,), generator=gen)  # some unseen labels
    return query, key, labels, queue, queue_labels


def _loss_fn(alpha):
    return SupConLoss(temperature=T) if alpha is None else DSCLLoss(alpha=alpha, temperature=T)


def _grads(loss, tensors, retain_graph=False):
    """Gradients of ``loss``; zeros for inputs it does not use (an empty queue)."""
    tensors = [t for t in tensors if t is not None]
    grads = torch.autograd.grad(loss, tensors, allow_unused=True, retain_graph=retain_graph)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha", [None, 0.0, 1.0 / 9.0, 0.5, 1.0])
@pytest.mark.parametrize("b,k", [(1, None), (5, None), (8, 0), (3, 7), (8, 20)])
def test_contrastive_matches_naive_values_and_grads(b, k, alpha, dtype):
    query, key, labels, queue, queue_labels = _inputs(b, k, dtype=dtype, seed=b + (k or 0))
    loss = _loss_fn(alpha)(query, key, labels, queue, queue_labels)
    ref = naive_contrastive(query, key, labels, queue, queue_labels, alpha)
    assert loss.dtype == dtype
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, ref, **tol)
    for got, want in zip(_grads(loss, [query, key, queue]), _grads(ref, [query, key, queue])):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("loss_fn", [DSCLLoss(alpha=0.3, temperature=0.5), SupConLoss(0.5)])
def test_contrastive_gradcheck(loss_fn):
    query, key, labels, queue, queue_labels = _inputs(4, 5, d=3, seed=1)
    assert torch.autograd.gradcheck(
        lambda q, k, m: loss_fn(q, k, labels, m, queue_labels), (query, key, queue)
    )


def test_key_and_queue_without_grad_get_none():
    query, key, labels, queue, queue_labels = _inputs(4, 5, seed=2)
    key, queue = key.detach(), queue.detach()
    DSCLLoss()(query, key, labels, queue, queue_labels).backward()
    assert query.grad is not None and key.grad is None and queue.grad is None


def test_backward_twice_with_retain_graph():
    query, key, labels, queue, queue_labels = _inputs(4, 5, seed=16)
    for loss_fn in (DSCLLoss(), SupConLoss()):
        loss = loss_fn(query, key, labels, queue, queue_labels)
        (first,) = torch.autograd.grad(loss, query, retain_graph=True)
        (second,) = torch.autograd.grad(loss, query)
        torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_int32_labels_and_unseen_queue_classes():
    query, key, labels, queue, queue_labels = _inputs(6, 9, seed=17)
    queue_labels = queue_labels + 2  # classes 3 and 4 never occur in the batch
    want = naive_contrastive(query, key, labels, queue, queue_labels, 0.25)
    got = DSCLLoss(alpha=0.25)(query, key, labels.int(), queue, queue_labels.int())
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0)


def test_supcon_symmetric_matches_pml():
    gen = torch.Generator().manual_seed(3)
    v1 = torch.randn(10, 8, generator=gen, dtype=torch.float64)
    v2 = torch.randn(10, 8, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4, 0])  # class 2 and 4 appear once
    ours = SupConLoss(temperature=T)
    mine = (ours(v1, v2, y) + ours(v2, v1, y)) / 2
    pml = pml_losses.SupConLoss(temperature=T)(torch.cat([v1, v2]), torch.cat([y, y]))
    torch.testing.assert_close(mine, pml, rtol=1e-10, atol=1e-12)


def test_dscl_equals_supcon_on_balanced_batch():
    query, key, _, _, _ = _inputs(12, None, seed=4)
    labels = torch.arange(12) % 3  # every anchor: 3 other queries + 3 other keys, |P_i| = 6
    dscl = DSCLLoss(alpha=1.0 / 7.0)(query, key, labels)
    torch.testing.assert_close(dscl, SupConLoss()(query, key, labels), rtol=1e-12, atol=0)
    assert not torch.allclose(DSCLLoss(alpha=1.0 / 9.0)(query, key, labels), dscl)


def test_beta_constructor():
    assert DSCLLoss(beta=8).alpha == pytest.approx(1.0 / 9.0)
    assert DSCLLoss().alpha == pytest.approx(1.0 / 9.0)
    assert DSCLLoss(beta=0).alpha == 1.0
    assert alpha_from(0.25, None) == 0.25
    with pytest.raises(ValueError, match="give alpha or beta, not both"):
        DSCLLoss(alpha=0.5, beta=8)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        DSCLLoss(beta=-1)


def test_class_once_in_batch_and_queue():
    query, key, _, _, _ = _inputs(4, None, seed=5)
    queue = torch.randn(3, 6, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 2])  # class 0 once in the batch and once in the queue
    queue_labels = torch.tensor([0, 1, 5])  # class 2 has no positive at all
    for alpha in (None, 0.2):
        loss = _loss_fn(alpha)(query, key, labels, queue, queue_labels)
        ref = naive_contrastive(query, key, labels, queue, queue_labels, alpha)
        torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)


def test_no_positive_puts_all_weight_on_own_key():
    query, key, _, _, _ = _inputs(2, None, seed=13)
    labels = torch.tensor([0, 1])
    q, k = F.normalize(query, dim=1), F.normalize(key, dim=1)
    expected = 0.0
    for i, j in ((0, 1), (1, 0)):  # candidates of anchor i: q_j, k_0, k_1
        logits = torch.stack([q[i] @ q[j], q[i] @ k[0], q[i] @ k[1]]) / T
        expected = expected - logits.log_softmax(0)[1 + i] / 2
    for loss_fn in (DSCLLoss(alpha=0.0), DSCLLoss(), SupConLoss()):
        torch.testing.assert_close(loss_fn(query, key, labels), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("alpha", [None, 0.25])
def test_all_labels_equal(alpha):
    query, key, _, queue, _ = _inputs(6, 4, seed=6)
    labels, queue_labels = (
        torch.zeros(6, dtype=torch.long),
        torch.zeros(4, dtype=torch.long),
    )
    loss = _loss_fn(alpha)(query, key, labels, queue, queue_labels)
    ref = naive_contrastive(query, key, labels, queue, queue_labels, alpha)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)


def test_single_anchor_without_queue_is_zero():
    query, key, labels, _, _ = _inputs(1, None, seed=7)
    loss = DSCLLoss()(query, key, labels)
    assert loss.item() == 0.0  # the own key is the only candidate
    loss.backward()
    assert torch.isfinite(query.grad).all()


def test_empty_queue_equals_no_queue():
    query, key, labels, _, _ = _inputs(5, None, seed=8)
    empty, empty_labels = (
        torch.empty(0, 6, dtype=torch.float64),
        torch.empty(0, dtype=torch.long),
    )
    for loss_fn in (DSCLLoss(), SupConLoss()):
        torch.testing.assert_close(
            loss_fn(query, key, labels, empty, empty_labels),
            loss_fn(query, key, labels),
        )


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16])
def test_autocast_identical_features_large_queue_is_finite(amp_dtype):
    b, k, d = 4, 65536, 8
    feature = torch.ones(d, dtype=amp_dtype)
    query = feature.expand(b, d).clone().requires_grad_()
    key, queue = feature.expand(b, d), feature.expand(k, d)
    labels, queue_labels = torch.arange(b), torch.arange(k) % 7
    for loss_fn in (DSCLLoss(), SupConLoss()):
        with torch.autocast("cpu", dtype=amp_dtype):
            loss = loss_fn(query, key, labels, queue, queue_labels)
        # all logits equal: every anchor's loss is log(#candidates)
        expected = torch.log(torch.tensor(2 * b - 1 + k, dtype=torch.float32))
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
        (grad,) = torch.autograd.grad(loss, query)
        assert torch.isfinite(grad).all()
    with torch.autocast("cpu", dtype=amp_dtype):
        patches = query[:, None].expand(b, 3, d)
        pbsd = PBSDLoss()(patches, patches, key, queue)
    assert torch.isfinite(pbsd)


@pytest.mark.parametrize("size", [(4, 6), [4, 6]])
def test_memory_bank_owning_loss(size):
    loss_fn = DSCLLoss(alpha=0.3, memory_bank_size=size)
    q1, k1, y1, _, _ = _inputs(3, None, seed=9)
    q2, k2, y2, _, _ = _inputs(3, None, seed=10)
    first = loss_fn(q1, k1, y1)  # empty bank: no queue
    torch.testing.assert_close(first, DSCLLoss(alpha=0.3)(q1, k1, y1))
    features, labels = loss_fn.memory_bank.get()
    unit_k1 = torch.nn.functional.normalize(k1.detach(), dim=1)
    torch.testing.assert_close(features, unit_k1.to(features.dtype))  # stored normalised
    assert torch.equal(labels, y1)
    loss_fn(q2.detach(), k2, y2)  # query without grad: the bank is not updated
    with torch.no_grad():
        loss_fn(q2, k2, y2)  # nor in no-grad mode
    assert loss_fn.memory_bank.get()[0].shape[0] == 3
    second = loss_fn(q2, k2, y2)
    want = DSCLLoss(alpha=0.3)(q2, k2, y2, k1.detach().float().double(), y1)  # unnormalised
    torch.testing.assert_close(second, want, rtol=1e-6, atol=1e-6)
    assert loss_fn.memory_bank.get()[0].shape[0] == 4  # wrapped: 4 slots, 6 keys seen
    with pytest.raises(ValueError, match="owns a memory bank"):
        loss_fn(q1, k1, y1, k2, y2)


@pytest.mark.parametrize("size", [0, (0, 6), [0, 6]])
@pytest.mark.parametrize("loss_cls", [DSCLLoss, SupConLoss])
def test_a_bank_of_no_entries_is_none_and_a_passed_queue_is_used(loss_cls, size):
    """``0`` and ``(0, D)`` disable the bank, as ``NTXentLoss(memory_bank_size=(0, D))``."""
    assert NTXentLoss(memory_bank_size=size).memory_bank.size[0] == 0
    loss_fn = loss_cls(temperature=T, memory_bank_size=size)
    assert loss_fn.memory_bank is None and not owns_queue(loss_fn)
    q, k, y, queue, queue_labels = _inputs(4, 5, seed=12)
    got = loss_fn(q, k, y, queue, queue_labels)
    alpha = getattr(loss_fn, "alpha", None)
    torch.testing.assert_close(got, naive_contrastive(q, k, y, queue, queue_labels, alpha))


@pytest.mark.parametrize("size", [(4, 6), [4, 6]])
def test_a_bank_of_entries_refuses_a_passed_queue(size):
    loss_fn = DSCLLoss(memory_bank_size=size)
    assert loss_fn.memory_bank.size == (4, 6) and owns_queue(loss_fn)
    q, k, y, queue, queue_labels = _inputs(3, 2, seed=13)
    with pytest.raises(ValueError, match=r"queue must not be given: this loss owns a memory"):
        loss_fn(q, k, y, queue, queue_labels)


@pytest.mark.parametrize("size", [8, (8,), (8, 6, 2), (-1, 6)])
def test_a_bank_size_without_its_dimension_names_the_argument(size):
    with pytest.raises(ValueError, match=r"^memory_bank_size must be \(num_entries, dim\)"):
        DSCLLoss(memory_bank_size=size)


def test_supcon_memory_bank():
    loss_fn = SupConLoss(memory_bank_size=(8, 6))
    q, k, y, _, _ = _inputs(3, None, seed=11)
    loss_fn(q, k, y)
    features, labels = loss_fn.memory_bank.get()
    assert features.shape == (3, 6) and torch.equal(labels, y)


@pytest.mark.parametrize("b,l,k", [(2, 3, None), (3, 2, 0), (2, 3, 5), (1, 1, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pbsd_matches_naive(b, l, k, dtype):
    gen = torch.Generator().manual_seed(b * 10 + l)
    patch = torch.randn(b, l, 6, generator=gen, dtype=dtype, requires_grad=True)
    region = torch.randn(b, l, 6, generator=gen, dtype=dtype, requires_grad=True)
    key = torch.randn(b, 6, generator=gen, dtype=dtype, requires_grad=True)
    queue = None if k is None else torch.randn(k, 6, generator=gen, dtype=dtype, requires_grad=True)
    loss = PBSDLoss(temperature=T)(patch, region, key, queue)
    ref = naive_pbsd(patch, region, key, queue)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, ref.to(dtype), **tol)
    inputs = [patch, key, queue]
    got = _grads(loss, inputs, retain_graph=True)
    for g, w in zip(got, _grads(ref, inputs)):
        torch.testing.assert_close(g, w, **tol)
    (region_grad,) = torch.autograd.grad(loss, region, allow_unused=True)
    assert region_grad is None  # the teacher is detached


def _pbsd_float64(patch, region, key, queue, temperature=T):
    """PBSD in float64, vectorised: the reference for large queues."""
    s, t, k, m = (F.normalize(x.double(), dim=-1) for x in (patch, region, key, queue))
    cands = torch.cat(
        [
            k[:, None, None, :].expand(-1, s.shape[1], 1, -1),
            m.expand(*s.shape[:2], *m.shape),
        ],
        dim=2,
    )  # (B, L, 1 + K, D)
    student = (cands @ s[..., None]).squeeze(-1) / temperature
    teacher = (cands @ t[..., None]).squeeze(-1) / temperature
    return -(teacher.softmax(-1) * student.log_softmax(-1)).sum(-1).mean()


@pytest.mark.parametrize("spread", [1.0, 1e-3])  # random features; nearly collapsed ones
def test_pbsd_value_accurate_at_k_65536(spread):
    """float32 PBSD within 1e-5 (relative) of float64 with a 65536 queue and a
    near-uniform teacher, and never below the bound log(1 + K) of a uniform teacher."""
    k, gen = 65536, torch.Generator().manual_seed(3)
    base = torch.randn(32, generator=gen)

    def features(*shape):
        return base + spread * torch.randn(*shape, 32, generator=gen)

    patch, key, queue = features(4, 2), features(4), features(k)
    region = features(4, 2) if spread < 1 else 1e-3 * torch.randn(4, 2, 32, generator=gen)
    loss = PBSDLoss()(patch, region, key, queue)
    want = _pbsd_float64(patch, region, key, queue)
    assert abs(loss.item() - want.item()) <= 1e-5 * want.item()
    if spread < 1:  # the teacher is (close to) uniform over the 1 + K candidates
        assert loss.item() >= math.log(1 + k) * (1 - 1e-6)


@pytest.mark.parametrize("shape", [(0, 2, 6), (3, 0, 6)])
def test_pbsd_empty_batch_or_no_patches_is_a_value_error(shape):
    empty = torch.zeros(shape)
    with pytest.raises(ValueError, match=r"patch_features must hold B >= 1 images with L >= 1"):
        PBSDLoss()(empty, empty, torch.zeros(shape[0], 6), torch.randn(5, 6))


def test_pbsd_gradcheck_and_empty_queue():
    gen = torch.Generator().manual_seed(12)
    patch = torch.randn(2, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    region = torch.randn(2, 2, 3, generator=gen, dtype=torch.float64)
    key = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    queue = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    loss_fn = PBSDLoss(temperature=0.5)
    # key and queue also shape the (constant) teacher target, so check the student only
    assert torch.autograd.gradcheck(lambda p: loss_fn(p, region, key, queue), (patch,))
    for empty in (None, torch.empty(0, 3, dtype=torch.float64)):
        assert loss_fn(patch, region, key, empty).item() == 0.0


def _good():
    return _inputs(4, 5, grad=False)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(query=torch.randn(4, 7, dtype=torch.float64)), r"key must have the shape of query"),
        (dict(key=torch.randn(3, 6, dtype=torch.float64)), r"key must have the shape of query"),
        (dict(query=torch.randn(4, 6, 1)), r"query must be a 2-D floating point tensor"),
        (dict(query=torch.ones(4, 6, dtype=torch.long)), r"query must be a 2-D floating point"),
        (dict(query=torch.empty(0, 6), key=torch.empty(0, 6), labels=torch.empty(0).long()),
         r"query is empty"),
        (dict(labels=torch.zeros(4)), r"labels must be a 1-D integer tensor, got shape \(4,\)"),
        (dict(labels=torch.zeros(4, 1, dtype=torch.long)), r"labels must be a 1-D integer"),
        (dict(labels=torch.zeros(3, dtype=torch.long)),
         r"labels must have one entry per feature row \(4\)"),
        (dict(queue_labels=None), r"queue and queue_labels must be given together"),
        (dict(queue=None), r"queue and queue_labels must be given together"),
        (dict(queue=torch.randn(5, 3, dtype=torch.float64)),
         r"queue must have feature dimension 6"),
        (dict(queue=torch.randn(5), queue_labels=torch.zeros(5, dtype=torch.long)),
         r"queue must be a 2-D floating point tensor"),
        (dict(queue_labels=torch.zeros(4, dtype=torch.long)),
         r"queue_labels must have one entry per feature row \(5\)"),
        (dict(queue_labels=torch.zeros(5)), r"queue_labels must be a 1-D integer tensor"),
    ],
)  # fmt: skip
def test_contrastive_input_errors(change, match):
    names = ("query", "key", "labels", "queue", "queue_labels")
    kwargs = dict(zip(names, _good()))
    kwargs.update(change)
    for loss_fn in (DSCLLoss(), SupConLoss()):
        with pytest.raises(ValueError, match=match):
            loss_fn(**kwargs)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        DSCLLoss(alpha=alpha)


@pytest.mark.parametrize("make", [DSCLLoss, SupConLoss, PBSDLoss])
@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan")])
def test_temperature_must_be_positive(make, temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        make(temperature=temperature)


@pytest.mark.parametrize("name", ["query", "key", "queue"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_check_finite_flag(name, bad):
    kwargs = dict(zip(("query", "key", "labels", "queue", "queue_labels"), _good()))
    kwargs[name] = kwargs[name].clone()
    kwargs[name][0, 0] = bad
    with pytest.raises(ValueError, match=f"{name} contains NaN or Inf"):
        DSCLLoss(check_finite=True)(**kwargs)
    DSCLLoss()(**kwargs)  # off by default: no check, no error


def test_pbsd_input_errors():
    patch, region = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    key, queue = torch.randn(2, 6), torch.randn(4, 6)
    loss_fn = PBSDLoss()
    with pytest.raises(ValueError, match="region_features must have the shape of patch_features"):
        loss_fn(patch, region[:, :2], key, queue)
    with pytest.raises(ValueError, match=r"key must have shape \(B, D\) = \(2, 6\)"):
        loss_fn(patch, region, key[:1], queue)
    with pytest.raises(ValueError, match="queue must have feature dimension 6"):
        loss_fn(patch, region, key, queue[:, :5])
    with pytest.raises(ValueError, match="patch_features must be a 3-D floating point tensor"):
        loss_fn(patch[0], region, key, queue)
    bad = patch.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="patch_features contains NaN or Inf"):
        PBSDLoss(check_finite=True)(bad, region, key, queue)
    assert torch.isnan(loss_fn(bad, region, key, queue))


# --- a queue of unit-norm keys (the model's bank) ---------------------------------


@pytest.mark.parametrize("loss_fn", [DSCLLoss(alpha=0.2), SupConLoss(), PBSDLoss()])
def test_normalized_queue_is_used_as_it_is_and_may_change_before_backward(loss_fn):
    """``queue_normalized=True`` gives the value and gradients of normalising the queue,
    and the backward pass does not read the queue (a bank view overwritten by the next
    enqueue before ``backward`` would otherwise give wrong gradients or an error)."""
    query, key, labels, raw, queue_labels = _inputs(5, 9, seed=21, grad=False)
    query.requires_grad_(True)
    unit = F.normalize(raw, dim=1)
    if isinstance(loss_fn, PBSDLoss):
        patches = torch.randn(5, 2, 6, dtype=torch.float64, requires_grad=True)
        regions = torch.randn(5, 2, 6, dtype=torch.float64)
        inputs = [patches, query]

        def call(queue, **kwargs):
            return loss_fn(patches, regions, query, queue, **kwargs)
    else:
        inputs = [query]

        def call(queue, **kwargs):
            return loss_fn(query, key, labels, queue, queue_labels, **kwargs)

    expected = call(raw)  # the loss normalises an unnormalised user queue itself
    bank = unit.clone()
    loss = call(bank, queue_normalized=True)
    bank.normal_()  # the next enqueue overwrites the view before backward
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(_grads(loss, inputs), _grads(expected, inputs)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
