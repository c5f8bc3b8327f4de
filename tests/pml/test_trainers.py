"""DSCL in pytorch-metric-learning's own trainers and testers (docs/pml.md, "With PML's
trainers and testers")."""

import math
import re

import pytest
import torch
from helpers import ROOT
from pytorch_metric_learning import trainers
from pytorch_metric_learning.reducers import MeanReducer
from references import ALPHA, NaiveRing, naive_loss
from torch import nn
from torch.utils.data import SequentialSampler, TensorDataset

import dscl_plugin  # noqa: F401  (registers the PML names)
from dscl_plugin.pml import DSCLCrossBatchMemory, DSCLLoss, DSCLMiner

CPU = torch.device("cpu")


def _trainers_section() -> str:
    text = (ROOT / "docs/pml.md").read_text()
    return text.split("## With PML's trainers and testers")[1].split("\n## ")[0]


def _docs_block() -> str:
    return re.search(r"```python\n(.*?)```", _trainers_section(), flags=re.S).group(1)


def _docs_memory() -> str:
    """The memory the prose puts in place of ``DSCLLoss``, as printed."""
    code = re.search(r"`(losses\.DSCLCrossBatchMemory\(.*?\))` in place", _trainers_section(), re.S)
    return code.group(1).replace("\n", " ")


@pytest.mark.parametrize("metric_loss", ["DSCLLoss", "DSCLCrossBatchMemory"])
def test_docs_example_trains_and_tests(metric_loss):
    block = _docs_block()
    if metric_loss == "DSCLCrossBatchMemory":
        loss = "losses.DSCLLoss(temperature=0.1)}"
        assert loss in block
        block = block.replace(loss, _docs_memory() + "}")
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(block, "docs/pml.md", "exec"), namespace)
    assert type(namespace["trainer"].loss_funcs["metric_loss"]).__name__ == metric_loss
    assert len(namespace["history"]) == 10 and all(map(math.isfinite, namespace["history"]))
    assert 0.0 <= namespace["before"] <= 1.0 and 0.0 <= namespace["after"] <= 1.0
    assert "precision_at_1_level0" in namespace["tester"].all_accuracies["test"]
    if metric_loss == "DSCLCrossBatchMemory":
        assert namespace["trainer"].loss_funcs["metric_loss"].queue_idx == 10 * 64 % 512


class _Recorded:
    """Keeps the arguments of each call of a PML loss or miner."""

    def forward(self, *args):
        self.__dict__.setdefault("calls", []).append(args)
        return super().forward(*args)


class RecordedLoss(_Recorded, DSCLLoss):
    pass


class RecordedMiner(_Recorded, DSCLMiner):
    pass


def _two_view_data(b=8, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(b) % 3
    v1 = torch.randn(b, d, generator=g)
    return v1, v1 + 0.3 * torch.randn(b, d, generator=g), y


def _run(trainer_class, dataset, metric_loss, miner=None, steps=1, batch_size=8):
    """``steps`` iterations of a PML trainer on a linear model; the model, the losses."""
    torch.manual_seed(0)
    model = nn.Linear(dataset.tensors[0].shape[1], 4)
    seen = []
    trainer = trainer_class(
        models={"trunk": model},
        optimizers={"trunk_optimizer": torch.optim.SGD(model.parameters(), lr=0.1)},
        batch_size=batch_size,
        loss_funcs={"metric_loss": metric_loss},
        mining_funcs={} if miner is None else {"tuple_miner": miner},
        dataset=dataset,
        sampler=SequentialSampler(dataset),
        iterations_per_epoch=steps,
        data_device=CPU,
        dataloader_num_workers=0,
        end_of_iteration_hook=lambda t: seen.append(t.losses["metric_loss"].detach()),
    )
    trainer.train(num_epochs=1)
    return model, seen


@pytest.mark.parametrize("with_miner", [True, False])
def test_two_stream_trainer_is_view1_anchors_against_view2(with_miner):
    """PML's TwoStreamMetricLoss mines on (view1, ref_emb=view2), layout 2, and calls the
    loss on cat([view1, view2]), layout 1, with the pairs shifted to the view-2 rows."""
    v1, v2, y = _two_view_data()
    loss = RecordedLoss()
    miner = RecordedMiner() if with_miner else None
    torch.manual_seed(0)
    expected_model = nn.Linear(5, 4)  # the model of _run before its first step
    _, seen = _run(trainers.TwoStreamMetricLoss, TensorDataset(v1, v2, y), loss, miner)
    e1, e2 = expected_model(v1), expected_model(v2)
    embeddings, labels, pairs = loss.calls[0]
    torch.testing.assert_close(embeddings, torch.cat([e1, e2]))
    assert torch.equal(labels, torch.cat([y, y]))
    if with_miner:
        mined_emb, mined_y, ref_emb, ref_y = miner.calls[0]
        torch.testing.assert_close(mined_emb, e1)
        torch.testing.assert_close(ref_emb, e2)
        assert torch.equal(mined_y, y) and torch.equal(ref_y, y)
    else:
        assert len(pairs) == 3  # PML's all triplets of the batch
    assert (pairs[0] < 8).all() and (pairs[1] >= 8).all()
    reference = DSCLLoss(query_candidates=False)(e1, y, ref_emb=e2, ref_labels=y)
    torch.testing.assert_close(seen[0], reference.detach())


def _message_of(call) -> str:
    with pytest.raises(ValueError) as raised:
        call()
    return str(raised.value)


def _assert_one_line_naming_the_fix(message: str) -> None:
    assert "\n" not in message and len(message) < 220, message
    assert "trainers.TwoStreamMetricLoss" in message


@pytest.mark.parametrize("part", ["loss", "miner", "memory"])
def test_metric_loss_only_stops_with_one_line_naming_two_stream(part):
    x = torch.randn(8, 5)
    dataset = TensorDataset(x, torch.arange(8) % 3)  # one view per image
    metric_loss = DSCLLoss()
    if part == "memory":
        metric_loss = DSCLCrossBatchMemory(DSCLLoss(), embedding_size=4, memory_size=16)
    miner = DSCLMiner() if part == "miner" else None
    message = _message_of(lambda: _run(trainers.MetricLossOnly, dataset, metric_loss, miner))
    _assert_one_line_naming_the_fix(message)
    if part == "memory":
        assert "enqueue_mask" in message
        assert metric_loss.queue_idx == 0 and not metric_loss.has_been_filled
    else:
        assert "labels[:B] != labels[B:] for B = 4" in message and "(layout 2" in message


def test_one_view_in_a_hand_written_call_names_the_fixes():
    emb, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 1])
    for call in (lambda: DSCLLoss()(emb, y), lambda: DSCLMiner()(emb, y)):
        message = _message_of(call)
        _assert_one_line_naming_the_fix(message)
        assert "pass the other view as ref_emb/ref_labels (layout 2" in message
    _assert_one_line_naming_the_fix(_message_of(lambda: DSCLLoss()(emb[:5], y[:5])))


def test_memory_under_two_stream_trainer_trains_for_a_few_steps():
    v1, v2, y = _two_view_data(b=24, seed=1)
    memory = DSCLCrossBatchMemory(
        DSCLLoss(), embedding_size=4, memory_size=20, miner=DSCLMiner(max_class_positives=2)
    )
    torch.manual_seed(0)
    before = nn.Linear(5, 4).weight.detach().clone()  # the model of _run before training
    model, seen = _run(
        trainers.TwoStreamMetricLoss,
        TensorDataset(v1, v2, y),
        memory,
        DSCLMiner(max_class_positives=2),
        steps=3,
    )
    assert len(seen) == 3 and all(torch.isfinite(loss) for loss in seen)
    assert memory.queue_idx == 24 % 20 and memory.has_been_filled
    assert not torch.equal(model.weight, before)
    assert torch.equal(memory.label_memory[[16, 17, 18, 19, 0, 1, 2, 3]], y[16:])  # last keys


def test_memory_without_enqueue_mask_reads_two_stream_rows():
    """Rows cat([view1, view2]) without an enqueue_mask are queries and keys, as with the
    mask; the trainer's pairs choose among this step's keys, all older entries stay."""
    mask_memory = DSCLCrossBatchMemory(DSCLLoss(reducer=MeanReducer()), 5, memory_size=12)
    rows_memory = DSCLCrossBatchMemory(DSCLLoss(reducer=MeanReducer()), 5, memory_size=12)
    ring = NaiveRing(12)
    for step in range(3):  # 8 keys a step through 12 slots
        q, k, y = _two_view_data(b=4, seed=10 + step)
        emb, labels = torch.cat([q, k]), torch.cat([y, y])
        with_mask = mask_memory(emb, labels, enqueue_mask=torch.arange(8) >= 4)
        torch.testing.assert_close(rows_memory(emb, labels), with_mask)
    assert rows_memory.queue_idx == mask_memory.queue_idx == 0
    for step in range(2):
        q, k, y = _two_view_data(b=4, seed=20 + step)
        slots = ring.enqueue(k, y)
    # the trainer's pairs: query 0 with key 1 (positive), query 2 with key 3 (negative)
    y = torch.tensor([0, 0, 1, 2])
    q, k, _ = _two_view_data(b=4, seed=30)
    memory = DSCLCrossBatchMemory(DSCLLoss(reducer=MeanReducer()), 5, memory_size=12)
    for step in range(2):
        old_q, old_k, old_y = _two_view_data(b=4, seed=20 + step)
        memory(torch.cat([old_q, old_k]), torch.cat([old_y, old_y]))
    pairs = (torch.tensor([0]), torch.tensor([5]), torch.tensor([2]), torch.tensor([7]))
    loss = memory(torch.cat([q, k]), torch.cat([y, y]), pairs)
    slots = ring.enqueue(k, y)
    older = [s for s in range(12) if ring.slots[s] is not None and s not in slots]
    refs = list(q) + [ring.slots[s][0] for s in slots + older]
    labels = y.tolist() + [ring.slots[s][1] for s in slots + older]
    older_cols = list(range(8, 8 + len(older)))
    key_cands = [[4, 5], [5], [6, 7], [7]]  # the partner, plus the pair
    cands = [[j for j in range(4) if j != i] + key_cands[i] + older_cols for i in range(4)]
    own = [4, 5, 6, 7]
    pos = [[c for c in cands[i] if c != own[i] and labels[c] == labels[i]] for i in range(4)]
    expected = naive_loss(q, refs, ALPHA, cands, own, pos).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)


def test_memory_refuses_pairs_that_are_not_view1_with_view2():
    memory = DSCLCrossBatchMemory(DSCLLoss(), embedding_size=5, memory_size=12)
    q, k, y = _two_view_data(b=4)
    emb, labels = torch.cat([q, k]), torch.cat([y, y])
    layout1_pairs = DSCLMiner()(emb, labels)  # anchors on both views
    message = _message_of(lambda: memory(emb, labels, layout1_pairs))
    assert message == (
        "indices_tuple must pair view 1 rows (< 4) with view 2 rows (4 to 7), as "
        "trainers.TwoStreamMetricLoss passes it."
    )
    assert memory.queue_idx == 0 and not memory.has_been_filled  # nothing enqueued
    with pytest.raises(ValueError, match="takes indices_tuple only without enqueue_mask"):
        memory(emb, labels, layout1_pairs, torch.arange(8) >= 4)
