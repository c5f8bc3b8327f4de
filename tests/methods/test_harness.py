"""The method harness with a tiny method of the tests' own: its options checked as config
keys, its class counts, its views, every ``loss_*`` term logged and drawn whatever its
name, its own classifier saved and scored by stage 2; and DSCL and SupCon on it."""

import json
from dataclasses import dataclass, field

import pytest
import torch
from helpers import CONFIGS, TINY
from PIL import Image
from torch import nn
from torchvision.transforms.functional import to_tensor

from dscl_plugin import checks
from dscl_plugin.data import build_dataset
from dscl_plugin.errors import ConfigError
from dscl_plugin.evaluation.curves import read_log, training_curves
from dscl_plugin.evaluation.metrics import shot_metrics
from dscl_plugin.methods import (
    Batch,
    Method,
    MomentumMethod,
    Views,
    build_method,
    check_method,
)
from dscl_plugin.runs.stage1 import train
from dscl_plugin.runs.stage2 import evaluate, score
from dscl_plugin.training import registry
from dscl_plugin.training.config import load_config
from dscl_plugin.transforms import DSCLTransform

COUNTS = [144, 100, 70, 50, 35, 25, 20, 15, 14, 14]


@dataclass(frozen=True)
class ToyOptions:
    weight: float = 1.0
    scale: list[float] = field(default_factory=lambda: [1.0, 2.0])

    def __post_init__(self):
        checks.at_least("weight", self.weight, 0)


class ToyModel(nn.Module):
    def __init__(self, backbone, feature_dim, classes):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(feature_dim, classes)


class Toy(Method):
    """Two query views and a weak one; a cross-entropy of its own classifier on each view
    (``loss_first``, ``loss_weak``)."""

    Options = ToyOptions
    needs_class_counts = True

    def views(self):
        return Views(("query", "query", "weak"))

    def build_model(self, backbone, feature_dim):
        return ToyModel(backbone, feature_dim, len(self.class_counts))

    def step(self, batch):
        first, _, weak = (self.model.classifier(self.embed(v)) for v in batch.views)
        loss_first = nn.functional.cross_entropy(first, batch.labels)
        loss_weak = nn.functional.cross_entropy(weak, batch.labels)
        return {
            "loss": loss_first + self.options.weight * loss_weak,
            "loss_first": loss_first,
            "loss_weak": loss_weak,
        }

    @property
    def own_classifier(self):
        return self.model.classifier


@pytest.fixture
def toy(monkeypatch):
    """``toy`` registered for the test only."""
    registry.available_methods()
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    registry.register_method("toy")(Toy)


def _config(*extra, method="toy"):
    return load_config(CONFIGS / "dscl_digits_lt.yaml", [*TINY, f"method={method}", *extra])


def _problem(*extra, method="toy"):
    with pytest.raises(ConfigError) as error:
        check_method(_config(*extra, method=method))
    return str(error.value)


def test_options_are_read_from_their_section_with_the_config_types(toy):
    module = build_method(
        _config("method_options.toy.weight=2", "method_options.toy.scale=[3]"), COUNTS
    )
    assert module.options == ToyOptions(weight=2.0, scale=[3.0])
    assert build_method(_config(), COUNTS).options == ToyOptions(1.0, [1.0, 2.0])
    assert module.class_counts == tuple(COUNTS)


@pytest.mark.parametrize(
    "override,problem",
    [
        (
            "method_options.toy.wieght=2",
            "method_options.toy.wieght: unknown option (did you mean "
            "method_options.toy.weight?); the options here: weight, scale",
        ),
        (
            "method_options.toy.beta=2",
            "method_options.toy.beta: unknown option (it is set as method_options.bcl.beta "
            "or model.beta or method_options.paco.beta)",
        ),
        (
            "method_options.toy.weight=heavy",
            "method_options.toy.weight: Value 'heavy' of type 'str' could not "
            "be converted to Float",
        ),
        ("method_options.toy.weight=-1", "method_options.toy.weight: must be >= 0, got -1.0"),
        ("method_options.toy=3", "method_options.toy: must be a mapping of option: value"),
        (
            "method_options.tyo.weight=1",
            "method_options.tyo: no method 'tyo' is registered (did you mean "
            "method_options.toy? registered: "
            "['bcl', 'dscl', 'kcl', 'paco', 'supcon', 'toy', 'tsc']",
        ),
        (
            "method_options.dscl.beta=4",
            "method_options.dscl: dscl reads its options from model.alpha, "
            "model.beta, model.pbsd_weight",
        ),
        (
            "trainer.log_grad_ratio=true",
            "trainer.log_grad_ratio: toy does not report the pull-gradient ratio",
        ),
    ],
)
def test_option_problems_are_one_line_naming_the_key(toy, override, problem):
    message = _problem(override)
    assert message.startswith(f"Invalid config: {problem}") and "\n" not in message


def test_another_methods_options_may_sit_in_the_config(toy):
    config = _config("method_options.toy.weight=3", method="dscl")
    assert check_method(config).__name__ == "DSCLMethod"  # toy's options checked, not used
    assert "method_options.toy.weight: must be >= 0" in _problem(
        "method_options.toy.weight=-3", method="dscl"
    )


def test_class_counts_missing_or_empty_classes_are_refused(toy):
    config = _config()
    with pytest.raises(ValueError, match="class_counts is needed by this method"):
        build_method(config)
    with pytest.raises(ValueError, match=r"class_counts must be one int >= 1 per class"):
        build_method(config, [5, 0, 3])
    with pytest.raises(ValueError, match=r"class_counts must be one int >= 0 per class"):
        build_method(_config(method="dscl"), [])
    assert build_method(_config(method="dscl"), [5, 0, 3]).class_counts == (5, 0, 3)
    assert build_method(_config(method="dscl")).class_counts is None


def test_a_model_must_hold_the_backbone_and_a_momentum_model_its_queue(toy):
    class Detached(Toy):
        def build_model(self, backbone, feature_dim):
            return ToyModel(nn.Identity(), feature_dim, 10)

    class NoQueue(MomentumMethod, Toy):
        pass

    with pytest.raises(ValueError, match="build_model must return a model that holds the back"):
        Detached(_config(), COUNTS)
    with pytest.raises(ValueError, match="update_momentum.m. and a LabeledMemoryBank"):
        NoQueue(_config(), COUNTS)


def test_the_views_of_each_kind_are_drawn_and_batched(toy):
    module = build_method(_config(), COUNTS)
    dataset = build_dataset("digits_lt", "train", module.train_transform(), input_size=16)
    samples = [dataset[i] for i in range(4)]
    assert len(samples[0][0]) == 3  # three views, no patches
    batch = Batch.of(module.collate_fn()(samples), 3)
    assert [v.shape for v in batch.views] == [(4, 3, 16, 16)] * 3
    assert batch.patches is None and batch.labels.dtype == torch.int64
    terms = module.step(batch)
    assert set(terms) == {"loss", "loss_first", "loss_weak"}
    # a weak view is the crop and flip alone: of the whole image, no colour change
    image = Image.fromarray((torch.rand(16, 16, 3) * 255).byte().numpy())
    weak = DSCLTransform(
        input_size=16,
        patch_size=16,
        num_patches=0,
        crop_scale=(1.0, 1.0),
        hflip_prob=0.0,
        normalize=None,
        view_kinds=("weak",),
    )
    torch.testing.assert_close(weak(image)[0], to_tensor(image))
    with pytest.raises(ValueError, match="view_kinds must be one or more of"):
        DSCLTransform(view_kinds=("strong",))


def test_device_views_follow_the_declared_kinds(toy):
    pytest.importorskip("kornia")
    from dscl_plugin.transforms.kornia_views import DeviceViews

    module = build_method(_config(), COUNTS)
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    views = DeviceViews(**module.view_options())(images)
    assert len(views) == 5 and views[3] is None and views[4] is None
    assert [v.shape for v in views[:3]] == [(4, 3, 16, 16)] * 3


def test_dscl_and_supcon_terms_carry_their_names():
    def terms(method, *extra):
        module = build_method(_config(*extra, method=method))
        dataset = build_dataset("digits_lt", "train", module.train_transform(), input_size=16)
        batch = Batch.of(module.collate_fn()([dataset[i] for i in range(4)]), 2)
        module.model.update_momentum()
        return module.step(batch), module.model

    supcon, _ = terms("supcon", "model.beta=null", "model.pbsd_weight=0", "model.num_patches=0")
    assert set(supcon) == {"loss", "loss_supcon"}
    dscl, model = terms("dscl")
    assert set(dscl) == {"loss", "loss_dscl", "loss_pbsd"}
    torch.testing.assert_close(dscl["loss"], dscl["loss_dscl"] + 1.5 * dscl["loss_pbsd"])
    assert int(model.memory_bank.num_filled) == 4  # the step enqueued its keys
    dscl_only, _ = terms("dscl", "model.pbsd_weight=0")
    assert set(dscl_only) == {"loss", "loss_dscl"}


def test_score_reports_the_own_classifier_by_shot_group(toy):
    config = _config()
    torch.manual_seed(0)
    features = {
        split: (torch.randn(n, 8), torch.arange(n) % 10)
        for split, n in (("train", 60), ("test", 30))
    }
    head = nn.Linear(8, 10)
    scores = score(config, None, features, COUNTS, torch.device("cpu"), own_classifier=head)
    expected = shot_metrics(head(features["test"][0]).detach(), features["test"][1], COUNTS, 60, 20)
    assert scores["own_classifier"] == {
        k: expected[k] for k in ("overall", "many", "medium", "few")
    }
    assert "own_classifier" not in score(config, None, features, COUNTS, torch.device("cpu"))


@pytest.mark.slow
def test_a_run_logs_every_term_and_scores_its_own_classifier(toy, tmp_path):
    config = _config("trainer.epochs=1", "monitor.every=0", f"output_dir={tmp_path / 'run'}")
    module = train(config)
    header = (tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"loss_step", "loss_first", "loss_weak", "lr"} <= set(header)
    assert "queue_fill" not in header  # a batch method has no queue
    loss, *_ = training_curves(read_log(tmp_path / "run" / "logs" / "metrics.csv"))
    assert {"loss_first", "loss_weak"} <= set(loss.series)
    metrics = evaluate(config, module)
    own = metrics["own_classifier"]
    assert own["label"] == "toy's own classifier" and 0 <= own["overall"] <= 1
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["own_classifier"] == own
    # re-evaluated from backbone.pt and the classifier.pt beside it: the same numbers
    assert evaluate(config)["own_classifier"] == own
    (tmp_path / "run" / "classifier.pt").unlink()
    assert "own_classifier" not in evaluate(config)  # no trained weights: not scored


@pytest.mark.slow
def test_a_step_must_return_the_loss_and_no_reserved_term(toy, tmp_path):
    class Reserved(Toy):
        def step(self, batch):
            return {**super().step(batch), "loss_epoch": torch.zeros(())}

    registry.register_method("reserved")(Reserved)
    config = _config(
        "trainer.epochs=1", "monitor.every=0", f"output_dir={tmp_path}", method="reserved"
    )
    with pytest.raises(ValueError, match="step must return 'loss' and no term named"):
        train(config)
