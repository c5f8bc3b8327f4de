"""KCLLoss against a loop reference of the official KCL (LTH14/targeted-supcon,
moco/builder.py, class KCL): the same drawn positives, masks and normalisation."""

import pytest
import torch
from references import naive_kcl

from dscl_plugin.functional.sampling import sample_class_pool
from dscl_plugin.losses import KCLLoss

T = 0.2


def _inputs(b=6, k=12, d=5, classes=3, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(b, d, generator=gen, dtype=dtype).requires_grad_()
    key = torch.randn(b, d, generator=gen, dtype=dtype).requires_grad_()
    labels = torch.randint(classes, (b,), generator=gen)
    queue = torch.randn(k, d, generator=gen, dtype=dtype).requires_grad_()
    # -1: empty slots; `classes`: a class absent from the batch
    queue_labels = torch.randint(-1, classes + 1, (k,), generator=gen)
    return query, key, labels, queue, queue_labels


def _drawn_rows(labels, queue_labels, k, seed):
    """The queue positives the loss draws with a generator seeded ``seed``."""
    if k == 0:
        return [torch.nonzero(queue_labels == y).flatten().tolist() for y in labels.tolist()]
    draw = sample_class_pool(labels, queue_labels, k, generator=torch.Generator().manual_seed(seed))
    return [r[v].tolist() for r, v in zip(draw.rows, draw.valid)]


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("k", [0, 1, 2, 6])
@pytest.mark.parametrize("seed", [0, 1])
def test_values_and_gradients_match_the_loop_reference(k, seed):
    query, key, labels, queue, queue_labels = _inputs(seed=seed)
    loss_fn = KCLLoss(k, temperature=T, generator=torch.Generator().manual_seed(seed))
    loss = loss_fn(query, key, labels, queue, queue_labels)
    rows = _drawn_rows(labels, queue_labels, k, seed)
    ref = naive_kcl(query, key, queue, rows, T)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(_grads(loss, [query, key, queue]), _grads(ref, [query, key, queue])):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_edge_cases_of_the_official_code():
    """k larger than a class's queue rows (all are taken), a class with no queue row, an
    empty slot (-1) that is a negative only, a queue class absent from the batch."""
    query, key, _, queue, _ = _inputs(b=4, k=7, seed=3)
    labels = torch.tensor([0, 0, 1, 2])
    queue_labels = torch.tensor([0, -1, 0, 3, 1, -1, 3])  # class 2: no row; class 3: no anchor
    loss = KCLLoss(5, temperature=T)(query, key, labels, queue, queue_labels)
    rows = [[0, 2], [0, 2], [4], []]  # every row of the class: fewer than k = 5
    ref = naive_kcl(query, key, queue, rows, T)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    for got, want in zip(_grads(loss, [query, queue]), _grads(ref, [query, queue])):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_without_a_queue_the_own_key_is_the_only_column():
    query, key, labels, _, _ = _inputs(b=3, seed=4)
    loss = KCLLoss(2)(query, key, labels)
    assert loss.item() == 0.0  # log p(k_i) = 0 with one column


def test_gradcheck_with_drawn_positives():
    query, key, labels, queue, queue_labels = _inputs(b=4, k=6, d=3, seed=5)

    def fn(q, k, m):  # a fresh generator per call: the same draw each time
        loss_fn = KCLLoss(2, temperature=0.5, generator=torch.Generator().manual_seed(0))
        return loss_fn(q, k, labels, m, queue_labels)

    assert torch.autograd.gradcheck(fn, (query, key, queue))


def test_float32_and_unit_queue_match_the_float64_reference():
    query, key, labels, queue, queue_labels = _inputs(seed=6)
    unit = torch.nn.functional.normalize(queue.detach(), dim=1)
    loss = KCLLoss(0, temperature=T)(
        query.float(), key.float(), labels, unit.float(), queue_labels, queue_normalized=True
    )
    rows = _drawn_rows(labels, queue_labels, 0, 0)
    ref = naive_kcl(query, key, queue, rows, T)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)


def test_draws_follow_the_generator():
    query, key, labels, queue, queue_labels = _inputs(b=16, k=40, seed=7)

    def loss(seed):
        loss_fn = KCLLoss(1, temperature=T, generator=torch.Generator().manual_seed(seed))
        return loss_fn(query, key, labels, queue, queue_labels)

    assert loss(0) == loss(0)
    assert loss(0) != loss(1)


def test_owned_memory_bank_enqueues_keys_after_the_loss_in_training():
    query, key, labels, _, _ = _inputs(b=4, seed=8)
    loss_fn = KCLLoss(0, temperature=T, memory_bank_size=(8, 5))
    first = loss_fn(query, key, labels)  # empty bank: own key only
    assert first.item() == 0.0
    bank, bank_labels = loss_fn.memory_bank.get()
    unit_keys = torch.nn.functional.normalize(key.detach(), dim=1)
    torch.testing.assert_close(bank.double(), unit_keys, rtol=1e-6, atol=1e-7)
    assert torch.equal(bank_labels, labels)
    second = loss_fn(query, key, labels)
    rows = [torch.nonzero(labels == y).flatten().tolist() for y in labels.tolist()]
    # the stored float32 rows are used as unit rows, without a float64 renormalisation
    ref = naive_kcl(query, key, bank.double(), rows, T)
    torch.testing.assert_close(second, ref, rtol=1e-6, atol=0)


def test_bad_inputs_name_the_argument():
    query, key, labels, queue, queue_labels = _inputs(seed=9)
    with pytest.raises(ValueError, match=r"labels must be class ids >= 0, got ids in \[-1, "):
        KCLLoss()(query, key, labels - 1, queue, queue_labels)
    with pytest.raises(ValueError, match=r"num_positives must be an int >= 0, got -1"):
        KCLLoss(num_positives=-1)
    with pytest.raises(ValueError, match=r"memory_bank_size must hold at least num_positives"):
        KCLLoss(num_positives=6, memory_bank_size=(4, 5))
    with pytest.raises(ValueError, match=r"queue must have feature dimension 5"):
        KCLLoss()(query, key, labels, queue[:, :3], queue_labels)
    with pytest.raises(ValueError, match=r"queue_labels must have one entry per feature row"):
        KCLLoss()(query, key, labels, queue, queue_labels[:3])
    with pytest.raises(TypeError, match=r"pytorch_metric_learning.losses.KCLLoss"):
        KCLLoss()(query, labels)
