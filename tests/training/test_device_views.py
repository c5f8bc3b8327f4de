"""data.pipeline: device end to end on digits_lt tiny runs: the seeded batch order of the
loader path, exact resume after a crash (at an epoch boundary and inside an epoch, where
the device path is bit-exact too: its views are seeded by the step), and a 2-process CPU
DDP run in which each rank gathers its own images."""

from pathlib import Path

import pytest
import torch
from helpers import Crash, CrashAt, RecordSteps, run_two_process_ddp, state_copy, tiny

from dscl_plugin.methods import Method
from dscl_plugin.runs.stage1 import train
from dscl_plugin.safe_io import load_file

pytest.importorskip("kornia")
pytestmark = pytest.mark.slow

DEVICE = "data.pipeline=device"


class RecordViews(RecordSteps):
    """RecordSteps plus the batch's views, patches and boxes."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self.steps[-1] += tuple(t.clone() for t in batch[:4])


def test_device_batches_follow_the_loader_order_and_shapes(tmp_path, monkeypatch):
    loader, device = RecordSteps(), RecordViews()
    train(tiny(tmp_path, "loader", "trainer.epochs=1"), callbacks=[loader])

    def no_pil_views(self):
        raise AssertionError("the device path built the loader path's PIL transform")

    monkeypatch.setattr(Method, "train_transform", no_pil_views)
    module = train(tiny(tmp_path, "device", "trainer.epochs=1", DEVICE), callbacks=[device])
    assert [s[:3] for s in device.steps] == [s[:3] for s in loader.steps]  # same seeded order
    _, _, _, _, view_q, view_k, patches, boxes = device.steps[0]
    assert view_q.shape == view_k.shape == (16, 3, 16, 16)
    assert patches.shape == (16, 2, 3, 8, 8) and boxes.shape == (16, 2, 4)
    assert int(module.model.memory_bank.num_filled) == 3 * 16


def test_device_resume_equals_uninterrupted_run(tmp_path):
    short = "trainer.limit_train_batches=2"
    straight = state_copy(train(tiny(tmp_path, "straight", short, DEVICE)))
    config = tiny(tmp_path, "resumed", short, DEVICE)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, callbacks=[Crash()])  # epoch 0 done and saved, crash inside epoch 1
    resumed = state_copy(train(config, resume=True))
    different = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not different, different


def test_device_mid_epoch_resume_is_bit_exact(tmp_path):
    every_step = [
        "trainer.checkpoint_every_n_steps=1",
        "trainer.limit_train_batches=4",
        DEVICE,
    ]
    straight = RecordViews()
    final = state_copy(train(tiny(tmp_path, "straight", *every_step), callbacks=[straight]))
    config = tiny(tmp_path, "resumed", *every_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, callbacks=[CrashAt(epoch=0, batch_idx=2)])  # 2 steps done and saved
    checkpoint = load_file(Path(config.output_dir) / "checkpoints" / "last.ckpt")
    assert checkpoint["loader_position"]["batches_done"] == 2
    resumed = RecordViews()
    module = train(config, resume=True, callbacks=[resumed])
    assert module.global_step == 8
    for got, want in zip(resumed.steps, straight.steps[2:], strict=True):
        assert got[:3] == want[:3] and got[3] == pytest.approx(want[3])
        assert all(torch.equal(a, b) for a, b in zip(got[4:], want[4:]))  # the very same views
    state = state_copy(module)
    assert not [k for k in final if not torch.equal(final[k], state[k])]


def test_device_ddp_ranks_gather_their_own_images(tmp_path):
    rank0, rank1 = run_two_process_ddp(tmp_path, DEVICE)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["bank"].shape == (2 * 8 * 2, 16) and torch.equal(rank0["bank"], rank1["bank"])
    assert not torch.equal(rank0["labels"], rank1["labels"])  # DistributedSampler: other images
    pairs = zip(rank0["labels"].split(8), rank1["labels"].split(8))
    assert torch.equal(rank0["bank_labels"], torch.cat([c for pair in pairs for c in pair]))
