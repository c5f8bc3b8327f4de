"""Tests of the pytorch-metric-learning binding (dscl_plugin.pml)."""

import importlib.util

import pytest
import torch
from helpers import ROOT
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.reducers import (
    AvgNonZeroReducer,
    ClassWeightedReducer,
    MeanReducer,
)
from pytorch_metric_learning.regularizers import LpRegularizer
from pytorch_metric_learning.utils import distributed as pml_dist
from references import (
    ALPHA,
    NaiveRing,
    T,
    layout1_sets,
    layout2_sets,
    naive_loss,
    tuple_sets,
    with_queries,
)

import dscl_plugin
from dscl_plugin import losses as lightly_losses
from dscl_plugin.pml import DSCLCrossBatchMemory, DSCLLoss, DSCLMiner


def two_views(b=6, d=8, classes=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (b,), generator=g)
    v1 = torch.randn(b, d, generator=g, dtype=dtype)
    v2 = v1 + 0.5 * torch.randn(b, d, generator=g, dtype=dtype)
    return v1, v2, y


# ----------------------------------------------------------------------------- loss math
@pytest.mark.parametrize("reducer", [None, MeanReducer()])
def test_layout1_equals_lightly_loss_both_directions(reducer):
    v1, v2, y = two_views()
    loss = DSCLLoss(reducer=reducer)(torch.cat([v1, v2]), torch.cat([y, y]))
    ref = lightly_losses.DSCLLoss()
    expected = (ref(v1, v2, y) + ref(v2, v1, y)) / 2
    torch.testing.assert_close(loss, expected)


def test_layout1_matches_naive_reference_per_anchor():
    v1, v2, y = two_views(b=5, classes=2, seed=1)
    emb, labels = torch.cat([v1, v2]), torch.cat([y, y])
    loss_fn = DSCLLoss(alpha=0.3)
    losses = loss_fn.compute_loss(emb, labels, None, emb, labels)["loss"]["losses"]
    expected = naive_loss(emb, emb, 0.3, *layout1_sets(labels.tolist()))
    torch.testing.assert_close(losses.double(), expected, rtol=1e-5, atol=1e-5)


def test_layout2_with_memory_matches_naive_reference():
    q, k, y = two_views(b=5, classes=4, seed=2)
    g = torch.Generator().manual_seed(3)
    mem, mem_y = torch.randn(7, 8, generator=g), torch.randint(0, 4, (7,), generator=g)
    ref, ref_y = torch.cat([k, mem]), torch.cat([y, mem_y])
    loss = DSCLLoss(beta=8, reducer=MeanReducer())(q, y, ref_emb=ref, ref_labels=ref_y)
    sets = layout2_sets(y.tolist(), ref_y.tolist())
    refs, *query_sets = with_queries(q, y.tolist(), ref, *sets)
    expected = naive_loss(q, refs, ALPHA, *query_sets)
    torch.testing.assert_close(loss.double(), expected.mean(), rtol=1e-5, atol=1e-5)
    keys_only = DSCLLoss(beta=8, reducer=MeanReducer(), query_candidates=False)
    expected = naive_loss(q, ref, ALPHA, *sets)
    torch.testing.assert_close(
        keys_only(q, y, ref_emb=ref, ref_labels=ref_y).double(),
        expected.mean(),
        rtol=1e-5,
        atol=1e-5,
    )


def test_supcon_setting_equals_pml_supcon_loss():
    g = torch.Generator().manual_seed(4)
    y = torch.arange(4).repeat_interleave(2)  # every class twice per view: |P_i| = 2
    v1, v2 = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    emb, labels = torch.cat([v1, v2]), torch.cat([y, y])
    ours = DSCLLoss(alpha=1 / 3, temperature=0.1)(emb, labels)
    theirs = pml_losses.SupConLoss(temperature=0.1)(emb, labels)
    torch.testing.assert_close(ours, theirs)


def test_anchors_without_negatives_get_dscl_value_not_zero():
    v1, v2, _ = two_views(b=4)
    y = torch.zeros(4, dtype=torch.long)
    emb, labels = torch.cat([v1, v2]), torch.cat([y, y])
    assert pml_losses.SupConLoss()(emb, labels).item() == 0.0
    loss = DSCLLoss()(emb, labels)
    expected = naive_loss(emb, emb, ALPHA, *layout1_sets(labels.tolist())).mean()
    assert loss.item() > 0
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)


def test_lp_distance_is_negated():
    v1, v2, y = two_views(seed=5)
    emb, labels = torch.cat([v1, v2]), torch.cat([y, y])
    loss = DSCLLoss(distance=LpDistance(), temperature=0.5)(emb, labels)

    def neg_dist(a, b):
        return -float((a.double() / a.double().norm() - b.double() / b.double().norm()).norm())

    expected = naive_loss(
        emb, emb, ALPHA, *layout1_sets(labels.tolist()), sim=neg_dist, temperature=0.5
    )
    torch.testing.assert_close(loss.double(), expected.mean(), rtol=1e-5, atol=1e-5)


def test_reducers():
    v1, v2, y = two_views(b=6, classes=3, seed=6)
    emb, labels = torch.cat([v1, v2]), torch.cat([y, y])
    per_anchor = naive_loss(emb, emb, ALPHA, *layout1_sets(labels.tolist()))
    weights = torch.tensor([0.5, 2.0, 1.0])
    weighted = DSCLLoss(reducer=ClassWeightedReducer(weights))(emb, labels)
    torch.testing.assert_close(
        weighted.double(),
        (per_anchor * weights.double()[labels]).mean(),
        rtol=1e-5,
        atol=1e-5,
    )
    for reducer in (MeanReducer(), AvgNonZeroReducer()):
        loss = DSCLLoss(reducer=reducer)(emb, labels)
        torch.testing.assert_close(loss.double(), per_anchor.mean(), rtol=1e-5, atol=1e-5)


def test_embedding_regularizer_stats_and_recordables():
    v1, v2, y = two_views(seed=7)
    emb, labels = torch.cat([v1, v2]), torch.cat([y, y])
    plain = DSCLLoss()(emb, labels)
    loss_fn = DSCLLoss(
        embedding_regularizer=LpRegularizer(),
        embedding_reg_weight=0.1,
        collect_stats=True,
    )
    regularised = loss_fn(emb, labels)
    torch.testing.assert_close(regularised - plain, 0.1 * emb.norm(dim=1).mean())
    _, _, pos = layout1_sets(labels.tolist())
    assert loss_fn.avg_num_class_positives == pytest.approx(sum(map(len, pos)) / len(pos))
    assert loss_fn.avg_num_candidates == len(emb) - 1
    assert {"alpha", "temperature"} <= set(loss_fn._record_these)
    assert loss_fn.alpha == pytest.approx(ALPHA) and loss_fn.temperature == T


def test_logits_in_float32_under_autocast():
    v1, v2, y = two_views(seed=8)
    emb, labels = torch.cat([v1, v2]), torch.cat([y, y])
    loss_fn = DSCLLoss(reducer=MeanReducer())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = loss_fn(emb, labels)
    assert amp.dtype == torch.float32
    torch.testing.assert_close(amp, loss_fn(emb, labels))


@pytest.mark.parametrize("layout", [1, 2])
def test_gradcheck_float64(layout):
    v1, v2, y = two_views(b=3, d=4, classes=2, seed=9, dtype=torch.float64)
    loss_fn = DSCLLoss(temperature=0.5, reducer=MeanReducer())
    if layout == 1:
        labels = torch.cat([y, y])
        inputs = (torch.cat([v1, v2]).requires_grad_(),)
        fn = lambda e: loss_fn(e, labels)  # noqa: E731
    else:
        inputs = (v1.clone().requires_grad_(), v2.clone().requires_grad_())
        fn = lambda q, k: loss_fn(q, y, ref_emb=k, ref_labels=y)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)


# ----------------------------------------------------------------------------- indices_tuple
def test_indices_tuple_pairs_select_candidates():
    v1, v2, y = two_views(b=5, classes=2, seed=10)
    emb, labels = torch.cat([v1, v2]), torch.cat([y, y])
    a1 = torch.tensor([0, 0, 1, 2, 7])
    p = torch.tensor([5, 2, 1, 0, 9])  # (0, 5) is a partner pair, (1, 1) a self pair
    a2 = torch.tensor([0, 3, 3, 8])
    n = torch.tensor([1, 4, 6, 2])
    loss_fn = DSCLLoss(reducer=MeanReducer())
    loss = loss_fn(emb, labels, (a1, p, a2, n))
    own = [(i + 5) % 10 for i in range(10)]
    cands, pos = tuple_sets((a1, p, a2, n), 10, own, layout1=True)
    expected = naive_loss(emb, emb, ALPHA, cands, own, pos)
    torch.testing.assert_close(loss.double(), expected.mean(), rtol=1e-5, atol=1e-5)


def test_triplets_from_a_pml_miner():
    v1, v2, y = two_views(b=6, classes=3, seed=11)
    emb, labels = torch.cat([v1, v2]), torch.cat([y, y])
    triplets = pml_miners.TripletMarginMiner(margin=0.5, type_of_triplets="semihard")(emb, labels)
    loss = DSCLLoss(reducer=MeanReducer())(emb, labels, triplets)
    a, p, n = triplets
    own = [(i + 6) % 12 for i in range(12)]
    cands, pos = tuple_sets((a, p, a, n), 12, own, layout1=True)
    expected = naive_loss(emb, emb, ALPHA, cands, own, pos)
    torch.testing.assert_close(loss.double(), expected.mean(), rtol=1e-5, atol=1e-5)


def test_overlapping_pairs_raise():
    v1, v2, y = two_views()
    emb, labels = torch.cat([v1, v2]), torch.cat([y, y])
    pair = torch.tensor([0]), torch.tensor([1])
    with pytest.raises(ValueError, match="both as positive and as negative"):
        DSCLLoss()(emb, labels, (*pair, *pair))


# ----------------------------------------------------------------------------- errors
def test_layout_errors():
    v1, v2, y = two_views(b=4, classes=4, seed=12)
    loss_fn = DSCLLoss()
    with pytest.raises(
        ValueError, match="two views per image \\(an even.*got 7 rows: use trainers"
    ):
        loss_fn(torch.cat([v1, v2[:3]]), torch.cat([y, y[:3]]))
    with pytest.raises(ValueError, match="ref_emb has 3 rows, fewer than embeddings \\(4\\)"):
        loss_fn(v1, y, ref_emb=v2[:3], ref_labels=y[:3])
    with pytest.raises(ValueError, match="ref_labels\\[:len\\(embeddings\\)\\] != labels"):
        loss_fn(v1, y, ref_emb=v2, ref_labels=y.flip(0))
    with pytest.raises(ValueError, match="own augmentation partner"):
        loss_fn(v1, y, ref_emb=v1.clone(), ref_labels=y)
    with pytest.raises(ValueError, match="needs labels"):
        loss_fn(
            torch.cat([v1, v2]),
            None,
            (
                torch.tensor([0]),
                torch.tensor([1]),
                torch.tensor([0]),
                torch.tensor([2]),
            ),
        )
    with pytest.raises(ValueError, match="needs ref_labels"):
        loss_fn(v1, y, ref_emb=v2)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        DSCLLoss(temperature=0)
    with pytest.raises(ValueError, match="alpha or beta, not both"):
        DSCLLoss(alpha=0.2, beta=3)


# ----------------------------------------------------------------------------- miner
def _pairs(indices_tuple):
    a1, p, a2, n = (x.tolist() for x in indices_tuple)
    return list(zip(a1, p)), list(zip(a2, n))


def test_miner_layout1_properties():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2, 0])
    labels = torch.cat([y, y])
    emb = torch.randn(16, 4)
    pos, neg = _pairs(DSCLMiner()(emb, labels))
    assert all(a != b for a, b in pos + neg)
    assert all(labels[a] == labels[b] for a, b in pos)
    assert all(labels[a] != labels[b] for a, b in neg)
    expected_pos = {
        (i, j) for i in range(16) for j in range(16) if i != j and labels[i] == labels[j]
    }
    assert set(pos) == expected_pos and len(pos) == len(expected_pos)
    torch.manual_seed(0)
    pos, neg = _pairs(DSCLMiner(max_class_positives=2, max_negatives=3)(emb, labels))
    for i in range(16):
        partner = (i + 8) % 16
        class_pos = [b for a, b in pos if a == i and b != partner]
        available = int((labels == labels[i]).sum()) - 2
        assert (i, partner) in pos
        assert len(class_pos) == min(2, available) == len(set(class_pos))
        assert len([b for a, b in neg if a == i]) == min(3, int((labels != labels[i]).sum()))


def test_miner_is_deterministic_under_seed():
    labels = torch.arange(4).repeat(4)
    emb = torch.randn(16, 4)
    miner = DSCLMiner(max_class_positives=1, max_negatives=2)
    torch.manual_seed(1)
    first = miner(emb, labels)
    torch.manual_seed(1)
    second = miner(emb, labels)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    draws = set()
    for seed in range(5):
        torch.manual_seed(seed)
        draws.add(tuple(miner(emb, labels)[1].tolist()))
    assert len(draws) > 1


def test_miner_with_ref_emb_and_loss_matches_naive():
    q, k, y = two_views(b=4, classes=2, seed=13)
    g = torch.Generator().manual_seed(14)
    mem, mem_y = torch.randn(6, 8, generator=g), torch.randint(0, 2, (6,), generator=g)
    ref, ref_y = torch.cat([k, mem]), torch.cat([y, mem_y])
    torch.manual_seed(2)
    indices = DSCLMiner(max_class_positives=1, max_negatives=2)(q, y, ref, ref_y)
    pos, neg = _pairs(indices)
    assert all((i, i) in pos for i in range(4))  # partners always kept
    assert all(len([b for a, b in pos if a == i and b != i]) <= 1 for i in range(4))
    assert all(0 <= b < 10 for _, b in pos + neg)
    loss = DSCLLoss(reducer=MeanReducer())(q, y, indices, ref, ref_y)
    cands, pos_sets = tuple_sets(indices, 4, list(range(4)), layout1=False)
    refs, cands, own, pos_sets = with_queries(q, y.tolist(), ref, cands, list(range(4)), pos_sets)
    expected = naive_loss(q, refs, ALPHA, cands, own, pos_sets)
    torch.testing.assert_close(loss.double(), expected.mean(), rtol=1e-5, atol=1e-5)


def test_uncapped_miner_equals_no_miner():
    v1, v2, y = two_views(seed=15)
    emb, labels = torch.cat([v1, v2]), torch.cat([y, y])
    loss_fn = DSCLLoss()
    torch.testing.assert_close(loss_fn(emb, labels, DSCLMiner()(emb, labels)), loss_fn(emb, labels))


def test_miner_errors():
    with pytest.raises(ValueError, match="max_class_positives must be None or an int >= 0"):
        DSCLMiner(max_class_positives=-1)
    with pytest.raises(ValueError, match="labels\\[:B\\] != labels\\[B:\\]"):
        DSCLMiner()(torch.randn(4, 2), torch.tensor([0, 1, 2, 3]))


# ----------------------------------------------------------------------------- memory
def _step_batch(step, b=4, d=6, classes=3):
    g = torch.Generator().manual_seed(100 + step)
    y = torch.randint(0, classes, (b,), generator=g)
    q, k = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    mask = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)])
    return q, k, y, mask


def test_cross_batch_memory_multi_step_with_wraparound():
    memory = DSCLCrossBatchMemory(DSCLLoss(reducer=MeanReducer()), embedding_size=6, memory_size=10)
    ring = NaiveRing(10)
    for step in range(6):  # 24 keys through 10 slots: wraps at steps 2 and 4
        q, k, y, mask = _step_batch(step)
        loss = memory(torch.cat([q, k]), torch.cat([y, y]), enqueue_mask=mask)
        slots = ring.enqueue(k, y)
        expected = ring.expected(q, y.tolist(), slots, ALPHA).mean()
        torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
        assert memory.queue_idx == ring.ptr
        assert memory.has_been_filled == (step >= 2)


def test_cross_batch_memory_gradient_reaches_queries_only():
    memory = DSCLCrossBatchMemory(DSCLLoss(), embedding_size=6, memory_size=10)
    q, k, y, mask = _step_batch(0)
    q.requires_grad_()
    k.requires_grad_()
    memory(torch.cat([q, k]), torch.cat([y, y]), enqueue_mask=mask).backward()
    assert q.grad.abs().sum() > 0
    assert k.grad is None or k.grad.abs().sum() == 0


def test_cross_batch_memory_with_miner_matches_naive():
    miner = DSCLMiner(max_class_positives=1)
    memory = DSCLCrossBatchMemory(DSCLLoss(reducer=MeanReducer()), 6, memory_size=10, miner=miner)
    ring = NaiveRing(10)
    for step in range(3):
        q, k, y, mask = _step_batch(step)
        torch.manual_seed(step)
        loss = memory(torch.cat([q, k]), torch.cat([y, y]), enqueue_mask=mask)
        slots = ring.enqueue(k, y)
    # the memory is passed rotated to start at this step's keys
    size = 10
    order = [(slots[0] + j) % size for j in range(size)]
    ref = torch.stack([ring.slots[s][0] for s in order])
    ref_y = torch.tensor([ring.slots[s][1] for s in order])
    torch.manual_seed(2)
    indices = miner(q, y, ref, ref_y)
    cands, pos = tuple_sets(indices, 4, list(range(4)), layout1=False)
    refs, cands, own, pos = with_queries(q, y.tolist(), ref, cands, list(range(4)), pos)
    expected = naive_loss(q, refs, ALPHA, cands, own, pos).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)


def test_cross_batch_memory_state_dict_round_trip():
    def make():
        return DSCLCrossBatchMemory(DSCLLoss(), embedding_size=6, memory_size=10)

    memory = make()
    for step in range(3):
        q, k, y, mask = _step_batch(step)
        memory(torch.cat([q, k]), torch.cat([y, y]), enqueue_mask=mask)
    state = memory.state_dict()
    assert set(state) == {
        "embedding_memory",
        "label_memory",
        "queue_idx",
        "has_been_filled",
    }
    restored = make()
    restored.load_state_dict(state)
    assert restored.queue_idx == memory.queue_idx == 2 and restored.has_been_filled is True
    assert torch.equal(restored.embedding_memory, memory.embedding_memory)
    q, k, y, mask = _step_batch(3)
    batch = (torch.cat([q, k]), torch.cat([y, y]))
    torch.testing.assert_close(
        restored(*batch, enqueue_mask=mask), memory(*batch, enqueue_mask=mask)
    )
    del state["queue_idx"]
    with pytest.raises(RuntimeError, match="Missing key.*queue_idx"):
        make().load_state_dict(state)


def test_cross_batch_memory_errors():
    memory = DSCLCrossBatchMemory(DSCLLoss(), embedding_size=6, memory_size=3)
    q, k, y, mask = _step_batch(0)
    emb, labels = torch.cat([q, k]), torch.cat([y, y])
    with pytest.raises(ValueError, match="takes indices_tuple only without enqueue_mask"):
        memory(emb, labels, (torch.tensor([0]),) * 4, mask)
    with pytest.raises(ValueError, match="one key row per query row"):
        memory(emb, labels, enqueue_mask=torch.arange(8) < 3)
    with pytest.raises(ValueError, match="bool tensor of shape \\(8,\\)"):
        memory(emb, labels, enqueue_mask=mask.long())
    with pytest.raises(ValueError, match="4 keys do not fit in memory_size=3"):
        memory(emb, labels, enqueue_mask=mask)
    with pytest.raises(TypeError, match="needs a dscl_plugin.pml.DSCLLoss"):
        DSCLCrossBatchMemory(lightly_losses.DSCLLoss(), embedding_size=6)
    with pytest.raises(TypeError, match="needs a dscl_plugin.pml.DSCLLoss"):
        DSCLCrossBatchMemory(pml_losses.SupConLoss(), embedding_size=6)


def test_every_path_gives_the_official_candidates_value_and_gradients():
    """PML's registered DSCLCrossBatchMemory, the PML partner layout and
    dscl_plugin.DSCLLoss on the same queries, keys, labels and queue: the official
    candidates cat(q, k, queue), the same loss and the same gradients."""
    g = torch.Generator().manual_seed(40)
    b, d, num_queue = 6, 8, 10
    q = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(b, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 3, (b,), generator=g)
    queue = torch.randn(num_queue, d, generator=g, dtype=torch.float64)
    queue_y = torch.randint(0, 4, (num_queue,), generator=g)

    core = dscl_plugin.DSCLLoss()(q, k, y, queue, queue_y)
    partner = pml_losses.DSCLLoss()(
        q, y, ref_emb=torch.cat([k, queue]), ref_labels=torch.cat([y, queue_y])
    )
    memory = pml_losses.DSCLCrossBatchMemory(
        pml_losses.DSCLLoss(),
        d,
        memory_size=num_queue + b,  # K + B: nothing evicted
    )
    memory.embedding_memory = memory.embedding_memory.double()
    memory.add_to_memory(queue, queue_y, num_queue)  # the same queue state
    crossbatch = memory(torch.cat([q, k]), torch.cat([y, y]), enqueue_mask=torch.arange(2 * b) >= b)
    torch.testing.assert_close(partner, core, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(crossbatch, core, rtol=1e-12, atol=1e-12)
    grads = [torch.autograd.grad(loss, [q, k], allow_unused=True) for loss in (core, partner)]
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    (grad_q,) = torch.autograd.grad(crossbatch, [q])  # the memory holds keys detached
    torch.testing.assert_close(grad_q, grads[0][0], rtol=1e-10, atol=1e-12)
    keys_only = pml_losses.DSCLLoss(query_candidates=False)(
        q, y, ref_emb=torch.cat([k, queue]), ref_labels=torch.cat([y, queue_y])
    )
    assert abs((keys_only - core).item()) > 1e-3  # the switch really drops the queries


# ----------------------------------------------------------------------------- distributed
@pytest.fixture
def two_fake_ranks(monkeypatch):
    """PML's DistributedLossWrapper as on rank 0 of 2; rank 1 holds the flipped rows."""
    monkeypatch.setattr(pml_dist, "is_distributed", lambda: True)
    monkeypatch.setattr(pml_dist, "all_gather", lambda x: x.flip(0))
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)


@pytest.mark.parametrize("efficient", [False, True])
def test_distributed_layout1_is_rejected(two_fake_ranks, efficient):
    v1, v2, y = two_views(b=4, classes=4, seed=16)
    wrapper = pml_dist.DistributedLossWrapper(DSCLLoss(), efficient=efficient)
    match = "DistributedLossWrapper"
    with pytest.raises(ValueError, match=match):
        wrapper(torch.cat([v1, v2]), torch.cat([y, y]))


@pytest.mark.parametrize("efficient", [False, True])
def test_distributed_layout2_partner_rows(two_fake_ranks, efficient):
    q, k, y = two_views(b=4, classes=2, seed=17)
    wrapper = pml_dist.DistributedLossWrapper(DSCLLoss(reducer=MeanReducer()), efficient=efficient)
    loss = wrapper(q, y, ref_emb=k, ref_labels=y)
    all_k, all_y = torch.cat([k, k.flip(0)]), torch.cat([y, y.flip(0)])
    anchors, anchor_y = (q, y) if efficient else (torch.cat([q, q.flip(0)]), all_y)
    sets = layout2_sets(anchor_y.tolist(), all_y.tolist())
    refs, *sets = with_queries(anchors, anchor_y.tolist(), all_k, *sets)  # efficient: own queries
    expected = naive_loss(anchors, refs, ALPHA, *sets)
    torch.testing.assert_close(loss.double(), 2 * expected.mean(), rtol=1e-5, atol=1e-5)


def test_distributed_layout2_with_memory_rows(two_fake_ranks):
    q, k, y = two_views(b=4, classes=2, seed=18)
    mem, mem_y = torch.randn(4, 8), torch.tensor([1, 1, 1, 1])
    ref, ref_y = torch.cat([k, mem]), torch.cat([y, mem_y])
    with pytest.raises(ValueError, match="efficient=False"):
        pml_dist.DistributedLossWrapper(DSCLLoss())(q, y, ref_emb=ref, ref_labels=ref_y)
    loss = pml_dist.DistributedLossWrapper(DSCLLoss(reducer=MeanReducer()), efficient=True)(
        q, y, ref_emb=ref, ref_labels=ref_y
    )
    all_ref, all_y = torch.cat([ref, ref.flip(0)]), torch.cat([ref_y, ref_y.flip(0)])
    refs, *sets = with_queries(q, y.tolist(), all_ref, *layout2_sets(y.tolist(), all_y.tolist()))
    expected = naive_loss(q, refs, ALPHA, *sets)
    torch.testing.assert_close(loss.double(), 2 * expected.mean(), rtol=1e-5, atol=1e-5)


def test_distributed_cross_batch_memory(two_fake_ranks):
    q, k, y, mask = _step_batch(0)
    emb, labels = torch.cat([q, k]), torch.cat([y, y])
    wrapped = pml_dist.DistributedLossWrapper(
        DSCLCrossBatchMemory(DSCLLoss(), embedding_size=6, memory_size=20)
    )
    loss = wrapped(emb, labels, enqueue_mask=mask)
    local = DSCLCrossBatchMemory(DSCLLoss(), embedding_size=6, memory_size=20)
    expected = local(
        torch.cat([emb, emb.flip(0)]),
        torch.cat([labels, labels.flip(0)]),
        enqueue_mask=torch.cat([mask, mask.flip(0)]),
    )
    torch.testing.assert_close(loss, 2 * expected)
    assert torch.equal(wrapped.loss.label_memory, local.label_memory)


# ----------------------------------------------------------------------------- example
def test_example_training_loop_runs(capsys):
    path = ROOT / "examples" / "pml_training_loop.py"
    spec = importlib.util.spec_from_file_location("pml_training_loop", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    torch.manual_seed(0)
    data = example.long_tailed_digits(imbalance=10.0, seed=0)
    example.batch_mode(data, steps=2, batch_size=16)
    example.moco_mode(data, steps=2, batch_size=16)
    out = capsys.readouterr().out
    assert "[batch] accuracy after" in out and "[moco]  accuracy after" in out


# ----------------------------------------------------------------------------- shared checks
@pytest.mark.parametrize("bad", [lambda y: y + 0.5, lambda y: y.float()])
def test_both_dscl_losses_reject_float_labels(bad):
    torch.manual_seed(0)
    q, k, y = torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="labels must be a 1-D integer tensor, got shape"):
        DSCLLoss()(torch.cat([q, k]), torch.cat([bad(y), bad(y)]))
    with pytest.raises(ValueError, match="ref_labels must be a 1-D integer tensor, got shape"):
        DSCLLoss()(q, y, ref_emb=k, ref_labels=bad(y))
    with pytest.raises(ValueError, match="labels must be a 1-D integer tensor, got shape"):
        lightly_losses.DSCLLoss()(q, k, bad(y))


def test_both_dscl_losses_check_finite_on_request():
    torch.manual_seed(0)
    q, k, y = torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
    nan_q = q.clone()
    nan_q[0, 0] = float("nan")
    assert torch.isnan(DSCLLoss()(torch.cat([nan_q, k]), torch.cat([y, y])))  # unchecked
    with pytest.raises(ValueError, match="embeddings contains NaN or Inf values"):
        DSCLLoss(check_finite=True)(torch.cat([nan_q, k]), torch.cat([y, y]))
    with pytest.raises(ValueError, match="ref_emb contains NaN or Inf values"):
        DSCLLoss(check_finite=True)(q, y, ref_emb=k * float("inf"), ref_labels=y)
    with pytest.raises(ValueError, match="query contains NaN or Inf values"):
        lightly_losses.DSCLLoss(check_finite=True)(nan_q, k, y)
    checked = DSCLLoss(check_finite=True)(q, y, ref_emb=k, ref_labels=y)
    torch.testing.assert_close(checked, DSCLLoss()(q, y, ref_emb=k, ref_labels=y))
    torch.testing.assert_close(checked, lightly_losses.DSCLLoss()(q, k, y))
