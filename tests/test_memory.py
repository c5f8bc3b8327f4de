"""LabeledMemoryBank: FIFO queue of keys with labels, persistent and DDP-gathered."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightly.loss import NTXentLoss
from lightly.models.modules.memory_bank import MemoryBankModule
from torch import nn

from dscl_plugin.losses import DSCLLoss, SupConLoss
from dscl_plugin.memory import LabeledMemoryBank, owns_queue, updates_queue


def _keys(start: int, num: int, dim: int = 3):
    """Keys whose every entry is their index, labelled ``100 + index``."""
    index = torch.arange(start, start + num)
    return index[:, None].float().expand(num, dim).clone(), index + 100


def _stored_indices(bank: LabeledMemoryBank):
    features, labels = bank.get()
    return features[:, 0].long().tolist(), labels.tolist()


def test_empty_bank_returns_no_rows():
    features, labels = LabeledMemoryBank(size=(8, 3)).get()
    assert features.shape == (0, 3) and labels.shape == (0,)
    assert labels.dtype == torch.long


def test_only_filled_rows_in_fifo_order():
    bank = LabeledMemoryBank(size=(8, 3))
    bank.enqueue(*_keys(0, 3))
    bank.enqueue(*_keys(3, 2))
    assert _stored_indices(bank) == ([0, 1, 2, 3, 4], [100, 101, 102, 103, 104])
    assert int(bank.bank_ptr) == 5 and int(bank.num_filled) == 5


def test_wrap_around_keeps_every_key_and_overwrites_the_oldest():
    bank = LabeledMemoryBank(size=(5, 3))
    bank.enqueue(*_keys(0, 3))
    bank.enqueue(*_keys(3, 3))  # runs past the end: key 5 wraps into slot 0
    indices, labels = _stored_indices(bank)
    assert indices == [5, 1, 2, 3, 4]
    assert labels == [i + 100 for i in indices]
    bank.enqueue(*_keys(6, 4))  # slots 1..4 hold the oldest keys 1..4
    indices, labels = _stored_indices(bank)
    assert indices == [5, 6, 7, 8, 9]
    assert labels == [i + 100 for i in indices]
    assert int(bank.bank_ptr) == 0


def test_batch_larger_than_bank_keeps_its_newest_keys():
    bank = LabeledMemoryBank(size=(4, 3))
    bank.enqueue(*_keys(0, 1))
    bank.enqueue(*_keys(1, 6))  # keys 3..6 survive
    indices, labels = _stored_indices(bank)
    assert sorted(indices) == [3, 4, 5, 6]
    assert labels == [i + 100 for i in indices]


def test_labels_follow_features_across_dtypes_and_devices():
    bank = LabeledMemoryBank(size=(6, 2))
    features = torch.randn(4, 2, dtype=torch.float64)
    labels = torch.tensor([3, 1, 3, 0], dtype=torch.int32)
    bank.enqueue(features, labels)
    got_features, got_labels = bank.get()
    assert got_features.dtype == torch.float32 and got_labels.dtype == torch.long
    torch.testing.assert_close(got_features, features.float())
    assert got_labels.tolist() == [3, 1, 3, 0]


def test_get_returns_views_without_copying_the_bank():
    bank = LabeledMemoryBank(size=(4, 3))
    bank.enqueue(*_keys(0, 2))
    features, labels = bank.get()
    assert features.data_ptr() == bank.bank.data_ptr()
    assert labels.data_ptr() == bank.labels.data_ptr()
    assert features.shape == (2, 3) and labels.shape == (2,)


def test_forward_keeps_lightlys_contract_output_and_filled_rows_before_update():
    bank = LabeledMemoryBank(size=(4, 3))
    bank.enqueue(*_keys(0, 1))
    output, labels = _keys(1, 2)
    before_labels = bank.get()[1].clone()
    out, rows = bank(output, labels, update=True)
    assert out is output
    assert rows.shape == (1, 3) and rows[:, 0].tolist() == [0.0]  # (n, dim): feature dim last
    assert before_labels.tolist() == [100]
    assert _stored_indices(bank) == ([0, 1, 2], [100, 101, 102])
    out, rows = bank(output)  # no update: labels may be left out, as in Lightly
    assert rows.shape == (3, 3) and int(bank.num_filled) == 3


def test_forward_of_a_disabled_bank_returns_none_as_lightly():
    for size in (0, (0, 3)):
        bank = LabeledMemoryBank(size=size)
        output, labels = _keys(0, 2)
        out, rows = bank(output, labels, update=True)
        assert out is output and rows is None
        assert MemoryBankModule(size=0)(output)[1] is None  # Lightly's disabled bank
        assert int(bank.num_filled) == 0


def test_forward_update_without_labels_names_the_fix():
    bank = LabeledMemoryBank(size=(4, 3))
    with pytest.raises(ValueError, match=r"labels are needed with update=True.*update=True\)"):
        bank(torch.zeros(2, 3), update=True)
    assert int(bank.num_filled) == 0


def test_state_dict_round_trip_restores_the_queue():
    bank = LabeledMemoryBank(size=(5, 3))
    bank.enqueue(*_keys(0, 7))
    state = bank.state_dict()
    assert set(state) == {"bank", "bank_ptr", "labels", "num_filled"}
    restored = LabeledMemoryBank(size=(5, 3))
    restored.load_state_dict(state)
    for a, b in zip(bank.get(), restored.get()):
        torch.testing.assert_close(a, b)
    bank.enqueue(*_keys(7, 2))
    restored.enqueue(*_keys(7, 2))
    for a, b in zip(bank.get(), restored.get()):
        torch.testing.assert_close(a, b)


def test_zero_size_bank_stays_empty():
    bank = LabeledMemoryBank(size=(0, 3))
    bank.enqueue(*_keys(0, 2))
    assert bank.get()[0].shape == (0, 3)


@pytest.mark.parametrize("size", [(4,), (4, 3, 2), 4, (-1, 3)])
def test_bad_size_raises(size):
    with pytest.raises(ValueError, match="size"):
        LabeledMemoryBank(size=size)


def test_int_size_zero_disables_the_bank_as_in_lightly():
    bank = LabeledMemoryBank(size=0)
    assert bank.size == (0,)
    bank.enqueue(*_keys(0, 2))
    features, labels = bank.get()
    assert features.shape[0] == 0 and labels.shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool, torch.complex64])
def test_non_integer_labels_are_refused_not_truncated(dtype):
    bank = LabeledMemoryBank(size=(4, 3))
    with pytest.raises(ValueError, match=f"labels must be a 1-D integer tensor.*dtype {dtype}"):
        bank.enqueue(torch.zeros(2, 3), torch.tensor([1.7, 0.0]).to(dtype))
    assert int(bank.num_filled) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
def test_features_are_moved_to_the_bank_device():
    bank = LabeledMemoryBank(size=(4, 3))  # on the CPU
    features, labels = _keys(0, 2)
    bank.enqueue(features.cuda(), labels.cuda())
    stored, stored_labels = bank.get()
    assert stored.device.type == "cpu" and torch.equal(stored, features)
    assert torch.equal(stored_labels, labels)


def test_bad_enqueue_inputs_raise():
    bank = LabeledMemoryBank(size=(4, 3))
    with pytest.raises(ValueError, match=r"features must have shape \(B, 3\)"):
        bank.enqueue(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must have one entry per feature row \(2\)"):
        bank.enqueue(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("loss_cls", [DSCLLoss, SupConLoss])
def test_loss_owned_bank_matches_explicit_queue(loss_cls):
    torch.manual_seed(0)
    owned = loss_cls(memory_bank_size=(6, 4))
    plain = loss_cls()
    queue, queue_labels = torch.randn(0, 4), torch.zeros(0, dtype=torch.long)
    for _ in range(3):
        query = torch.randn(4, 4, requires_grad=True)
        key, labels = torch.randn(4, 4), torch.randint(0, 2, (4,))
        expected = plain(query, key, labels, queue, queue_labels)
        torch.testing.assert_close(owned(query, key, labels), expected)
        queue = torch.cat([queue, key])[-6:]
        queue_labels = torch.cat([queue_labels, labels])[-6:]
        stored, stored_labels = owned.memory_bank.get()
        order = torch.argsort(stored[:, 0])  # the bank is in slot order
        unit = torch.nn.functional.normalize(queue, dim=1)  # the bank holds unit keys
        torch.testing.assert_close(stored[order], unit[torch.argsort(unit[:, 0])])
        assert sorted(stored_labels.tolist()) == sorted(queue_labels.tolist())


def test_loss_owned_bank_is_not_updated_without_grad():
    loss_fn = DSCLLoss(memory_bank_size=(6, 4))
    loss_fn(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 1]))
    assert int(loss_fn.memory_bank.num_filled) == 0
    with pytest.raises(ValueError, match="owns a memory bank"):
        loss_fn(
            torch.randn(2, 4),
            torch.randn(2, 4),
            torch.tensor([0, 1]),
            torch.randn(3, 4),
            torch.zeros(3, dtype=torch.long),
        )


def test_one_update_rule_a_training_step_only():
    owner = nn.Linear(2, 2)
    query = torch.randn(2, 3, requires_grad=True)
    assert updates_queue(owner, query)
    assert not updates_queue(owner, query.detach())
    with torch.no_grad():
        assert not updates_queue(owner, query)
    assert not updates_queue(owner.eval(), query)


def test_loss_owned_bank_is_not_updated_in_eval_mode():
    loss_fn = DSCLLoss(memory_bank_size=(6, 4))
    query, labels = torch.randn(2, 4, requires_grad=True), torch.tensor([0, 1])
    loss_fn.eval()  # e.g. a validation step of a model holding the loss
    loss_fn(query, torch.randn(2, 4), labels)
    assert int(loss_fn.memory_bank.num_filled) == 0
    loss_fn.train()
    loss_fn(query, torch.randn(2, 4), labels)
    assert int(loss_fn.memory_bank.num_filled) == 2


def test_owns_queue_finds_enabled_banks_of_ours_and_lightlys():
    assert owns_queue(DSCLLoss(memory_bank_size=(6, 4)))
    assert owns_queue(NTXentLoss(memory_bank_size=(6, 4)))
    assert not owns_queue(DSCLLoss()) and not owns_queue(NTXentLoss())
    assert not owns_queue(LabeledMemoryBank(size=(0, 4)))
    assert owns_queue(nn.Sequential(nn.Linear(2, 2), LabeledMemoryBank(size=(4, 2))))


def _gather_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        bank = LabeledMemoryBank(size=(8, 3), gather_distributed=True)
        bank.enqueue(*_keys(10 * rank, 2))
        bank.enqueue(*_keys(10 * rank + 2, 1))
        torch.save(bank.get(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gather_distributed_enqueues_keys_with_labels_from_all_ranks(tmp_path):
    mp.start_processes(  # fork: the children need not re-import torch
        _gather_worker,
        args=(2, str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    expected = [0, 1, 10, 11, 2, 12]  # rank order within each gathered batch
    for rank in range(2):
        features, labels = torch.load(tmp_path / f"rank{rank}.pt")
        assert features[:, 0].long().tolist() == expected
        assert labels.tolist() == [i + 100 for i in expected]
