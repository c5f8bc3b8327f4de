"""Stage-1 data: the data module's loader and, for ``data.pipeline: device``, the views it
makes once a batch is on the device; the method knows nothing of either."""

from types import SimpleNamespace

import pytest
import torch
from helpers import tiny
from pytorch_lightning.utilities.model_helpers import is_overridden

from dscl_plugin.data import build_dataset
from dscl_plugin.methods import build_method
from dscl_plugin.training.data import DeviceTrainingData, TrainingData
from dscl_plugin.training.device_views import BatchViews
from dscl_plugin.training.resume import ResumableDataLoader
from dscl_plugin.transforms.kornia_views import DeviceViews


def test_loader_pipeline_batches_the_methods_views(tmp_path):
    method = build_method(tiny(tmp_path, "run"))
    dataset = build_dataset("digits_lt", "train", method.train_transform(), input_size=16)
    data = TrainingData(dataset, 16, seed=0, collate_fn=method.collate_fn())
    loader = data.train_dataloader()
    assert isinstance(loader, ResumableDataLoader) and loader.generator is data.generator
    assert loader.position is data.position and loader.drop_last
    batch = next(iter(loader))
    view_q, view_k, patches, boxes, labels = batch
    assert view_q.shape == view_k.shape == (16, 3, 16, 16) and patches.shape == (16, 2, 3, 8, 8)
    assert not is_overridden("on_after_batch_transfer", data)  # a method's own hook runs
    assert torch.equal(
        data.position.epoch_start_state, torch.Generator().manual_seed(0).get_state()
    )


def test_device_pipeline_makes_the_views_of_the_trainers_step_and_rank(tmp_path):
    pytest.importorskip("kornia")
    method = build_method(tiny(tmp_path, "run", "data.pipeline=device"))
    dataset = build_dataset("digits_lt", "train", input_size=16)
    data = DeviceTrainingData(dataset, 8, seed=0, views=method.view_options())
    loader = data.train_dataloader()
    assert loader.num_workers == 0
    indices, labels = next(iter(loader))  # no views made by the loader
    assert indices.shape == labels.shape == (8,)
    data.trainer = SimpleNamespace(global_step=5, global_rank=1)
    views = data.on_after_batch_transfer((indices, labels), 0)
    images = torch.from_numpy(dataset.images).unsqueeze(1)
    expected = BatchViews(images, DeviceViews(**method.view_options()), seed=0)
    want = expected(indices, labels, step=5, rank=1)
    assert len(views) == 5 and all(torch.equal(a, b) for a, b in zip(views, want))
    assert torch.equal(views[4], labels)
    file_dataset = torch.utils.data.TensorDataset(torch.zeros(2))
    with pytest.raises(ValueError, match="ArrayImageDataset"):
        DeviceTrainingData(file_dataset, 8, seed=0, views=method.view_options())


def test_the_method_has_no_data_hooks_and_builds_its_queue_for_the_processes(tmp_path):
    one = build_method(tiny(tmp_path, "one"))
    assert not is_overridden("on_after_batch_transfer", one)
    assert not is_overridden("setup", one)
    assert not one.gather_distributed and not one.model.memory_bank.gather_distributed
    two = build_method(tiny(tmp_path, "two", "trainer.devices=2", "trainer.accelerator=cpu"))
    assert two.gather_distributed and two.model.memory_bank.gather_distributed
    nodes = build_method(tiny(tmp_path, "nodes", "trainer.num_nodes=2"))
    assert nodes.model.memory_bank.gather_distributed
