"""The argument rules of dscl_plugin.checks, and the one label rule wherever labels enter."""

import numpy as np
import pytest
import torch
from torch import nn

from dscl_plugin import checks
from dscl_plugin.errors import InvalidValue
from dscl_plugin.losses import DSCLLoss, SupConLoss
from dscl_plugin.memory import LabeledMemoryBank
from dscl_plugin.models import DSCLModel, build_backbone
from dscl_plugin.pml import DSCLLoss as PMLDSCLLoss
from dscl_plugin.pml import DSCLMiner
from dscl_plugin.transforms import PatchViewCollate


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: checks.integer("n", 2.0, 1), "n must be an int >= 1, got 2.0."),
        (lambda: checks.integer("n", True, 0), "n must be an int >= 0, got True."),
        (lambda: checks.integer("n", 0, 1), "n must be an int >= 1, got 0."),
        (lambda: checks.integer("k", -1, 0, allow_none=True), "k must be None or an int >= 0"),
        (lambda: checks.fraction("f", 0), "f must be in (0, 1], got 0."),
        (lambda: checks.fraction("f", 1.5), "f must be in (0, 1], got 1.5."),
        (lambda: checks.positive_range("r", (2, 1)), "r must be (min, max) with 0 < min <= max"),
        (lambda: checks.positive_range("r", (0, 1)), "r must be (min, max) with 0 < min <= max"),
        (lambda: checks.jitter("j", (0.4, 0.4, 0.4)), "j must be [brightness, contrast,"),
        (
            lambda: checks.jitter("j", (0, 0, 0, 0.6)),
            "j must be [brightness, contrast, saturation, hue] >= 0 "
            "with hue <= 0.5, got [0, 0, 0, 0.6].",
        ),
        (lambda: checks.patch_size(40, 32), "patch_size must be in (0, input_size=32], got 40."),
        (lambda: checks.multiple_of("w", 10, "h", 3), "w must be a multiple of h (3), got 10."),
        (lambda: checks.queue(torch.zeros(3, 4), 5), "queue must have feature dimension 5"),
    ],
)
def test_a_broken_rule_names_the_argument_and_the_rule(call, message):
    with pytest.raises(InvalidValue) as info:
        call()
    assert str(info.value).startswith(message)


def test_values_within_the_rules_pass():
    checks.integer("n", np.int64(3), 1)
    checks.integer("k", None, 0, allow_none=True)
    checks.fraction("f", 1.0)
    checks.positive_range("r", (0.75, 4 / 3))
    checks.jitter("j", (0.4, 0.4, 0.4, 0.5))
    checks.patch_size(32, 32)
    checks.multiple_of("w", 12, "h", 3)
    checks.queue(torch.zeros(0, 5), 5)
    checks.labels("labels", torch.tensor([0, 3], dtype=torch.int32), 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool, torch.complex64])
def test_labels_must_be_integer_class_ids(dtype):
    with pytest.raises(InvalidValue) as info:
        checks.labels("queue_labels", torch.tensor([1, 0]).to(dtype), 2)
    assert str(info.value) == (
        f"queue_labels must be a 1-D integer tensor, got shape (2,) and dtype {dtype}; "
        "convert whole-number class ids with queue_labels.long()."
    )


def test_labels_need_one_entry_per_feature_row():
    with pytest.raises(
        InvalidValue, match=r"labels must be a 1-D integer tensor, got shape \(2, 1\)"
    ):
        checks.labels("labels", torch.zeros(2, 1, dtype=torch.long), 2)
    with pytest.raises(InvalidValue, match=r"labels must have one entry per feature row \(3\)"):
        checks.labels("labels", torch.zeros(2, dtype=torch.long), 3)


def _model_call(labels):
    torch.manual_seed(0)
    backbone, dim = build_backbone("small_cnn")
    model = DSCLModel(backbone, dim, proj_dim=4, queue_size=8, pbsd_weight=0.0)
    views = torch.randn(4, 3, 8, 8)
    model(views, views, None, None, labels)


def _miner_call(labels):
    DSCLMiner()(torch.randn(8, 4), torch.cat([labels, labels]))


def _collate_call(labels):
    views = [torch.zeros(3, 4, 4), torch.zeros(3, 4, 4)]
    PatchViewCollate()([(views, y) for y in labels])


LABEL_ENTRIES = {
    "DSCLLoss": lambda y: DSCLLoss()(torch.randn(4, 6), torch.randn(4, 6), y),
    "SupConLoss": lambda y: SupConLoss()(torch.randn(4, 6), torch.randn(4, 6), y),
    "pml.DSCLLoss": lambda y: PMLDSCLLoss()(torch.randn(8, 6), torch.cat([y, y])),
    "pml.DSCLMiner": _miner_call,
    "LabeledMemoryBank.enqueue": lambda y: LabeledMemoryBank((8, 6)).enqueue(torch.zeros(4, 6), y),
    "LabeledMemoryBank.forward": lambda y: LabeledMemoryBank((8, 6))(torch.zeros(4, 6), y, True),
    "DSCLModel": _model_call,
    "PatchViewCollate": _collate_call,
}


@pytest.mark.parametrize("entry", LABEL_ENTRIES, ids=list(LABEL_ENTRIES))
@pytest.mark.parametrize("bad", [torch.float32, torch.bool], ids=["float", "bool"])
def test_one_label_rule_wherever_labels_enter(entry, bad):
    labels = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"labels must be a 1-D integer tensor.*labels\.long\(\)"):
        LABEL_ENTRIES[entry](labels.to(bad))
    LABEL_ENTRIES[entry](labels)  # integer labels pass


def test_the_rules_raise_value_errors():
    assert issubclass(InvalidValue, ValueError)
    with pytest.raises(ValueError, match="momentum must be in"):
        DSCLModel(nn.Conv2d(3, 4, 1), 4, momentum=2)
