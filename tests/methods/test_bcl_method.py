"""The BCL method: its presets, options, views, its step against the official training
step (FlamieZhu/Balanced-Contrastive-Learning, main.py ``train``) written with the loop
references, its own classifier, and one tiny run end to end."""

import json

import pytest
import torch
from helpers import CONFIGS, TINY
from references import naive_balscl, naive_logit_adjust

from dscl_plugin.cli import train_main
from dscl_plugin.data import build_dataset
from dscl_plugin.errors import ConfigError
from dscl_plugin.methods import Batch, BCLMethod, BCLOptions, build_method
from dscl_plugin.models import BCLModel
from dscl_plugin.runs.compare import plan_runs
from dscl_plugin.training.config import load_config

COUNTS = [144, 100, 70, 50, 35, 25, 20, 15, 14, 14]  # digits_lt's, imbalance 10


def _config(*extra, preset="bcl_digits_lt"):
    return load_config(CONFIGS / f"{preset}.yaml", [*TINY, *extra])


@pytest.mark.parametrize(
    "preset", ["bcl_digits_lt", "bcl_fashion_mnist_lt", "bcl_cifar10_lt", "bcl_cifar100_lt"]
)
def test_presets_are_bcl_with_the_official_weights(preset):
    config = load_config(CONFIGS / f"{preset}.yaml")
    assert config.method == "bcl" and config.model.pbsd_weight == 0
    assert config.method_options == {"bcl": {"alpha": 1.0, "beta": 0.35, "tau": 1.0}}


def test_the_imagenet_preset_is_the_official_recipe():
    c = load_config(CONFIGS / "bcl_imagenet_lt.yaml")
    assert c.method == "bcl" and c.method_options["bcl"] == {"alpha": 1.0, "beta": 0.35, "tau": 1.0}
    assert (c.model.backbone, c.model.zero_init_residual) == ("resnet50", False)
    assert (c.model.proj_dim, c.model.temperature) == (1024, 0.07)
    o = c.optim
    assert (o.lr, o.momentum, o.weight_decay, o.warmup_epochs) == (0.1, 0.9, 5e-4, 0)
    assert (o.cosine, o.interval, c.trainer.epochs, c.trainer.batch_size) == (
        True,
        "epoch",
        90,
        256,
    )
    d = c.data
    assert (d.crop_scale, d.color_jitter, d.jitter_prob) == ([0.08, 1.0], [0.4, 0.4, 0.4, 0.1], 0.8)
    assert (d.grayscale_prob, d.blur_prob, d.hflip_prob) == (0.2, 0.0, 0.5)


def _batch(module, size=8):
    dataset = build_dataset("digits_lt", "train", module.train_transform(), input_size=16)
    samples = [dataset[i] for i in range(0, 70 * size, 70)]  # several classes, one repeated
    return Batch.of(module.collate_fn()(samples), 3)


def test_three_views_key_then_two_queries_and_no_queue():
    module = build_method(_config(), COUNTS)
    assert isinstance(module, BCLMethod) and isinstance(module.model, BCLModel)
    assert module.views().kinds == ("key", "query", "query") and module.views().patches is None
    assert module.options == BCLOptions() and module.own_classifier is module.model.classifier
    batch = _batch(module)
    assert len(batch.views) == 3 and batch.views[0].shape == (8, 3, 16, 16)
    assert not hasattr(module.model, "memory_bank")


def _official_step(module, batch, alpha, beta, tau, temperature):
    """main.py ``train``: one forward of the three views, the logits of the first, the
    projections of the other two, the prototypes ``normalize(head_fc(fc.weight))``."""
    model, b = module.model, len(batch.labels)
    pooled = module.embed(torch.cat(batch.views))
    z = torch.nn.functional.normalize(model.head(pooled), dim=1)
    weight = model.classifier.weight
    logits = (
        30
        * torch.nn.functional.normalize(pooled, dim=1)
        @ (torch.nn.functional.normalize(weight, dim=1).T)
    )
    centers = torch.nn.functional.normalize(model.prototype_head(weight), dim=1)
    ce = naive_logit_adjust(logits[:b], batch.labels, COUNTS, tau)
    scl = naive_balscl(z[b : 2 * b], z[2 * b :], batch.labels, centers, temperature)
    return alpha * ce + beta * scl, ce, scl


def test_the_step_is_the_official_training_step():
    options = ["method_options.bcl.alpha=0.5", "method_options.bcl.beta=2", "model.temperature=0.2"]
    module = build_method(_config(*options, "method_options.bcl.tau=0.7"), COUNTS).double()
    batch = _batch(module)
    batch = Batch(tuple(v.double() for v in batch.views), batch.labels)
    terms = module.step(batch)
    assert set(terms) == {"loss", "loss_ce", "loss_bcl"}
    parameters = list(module.model.parameters())
    grads = torch.autograd.grad(terms["loss"], parameters)
    want = _official_step(module, batch, 0.5, 2.0, 0.7, 0.2)
    for got, expected in zip((terms["loss"], terms["loss_ce"], terms["loss_bcl"]), want):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    for got, expected in zip(grads, torch.autograd.grad(want[0], parameters)):
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)


def test_nothing_is_detached_the_prototypes_train_the_classifier():
    module = build_method(_config("method_options.bcl.alpha=0"), COUNTS)
    module.step(_batch(module))["loss"].backward()
    model = module.model
    assert model.classifier.weight.grad.abs().sum() > 0  # through the prototypes only
    assert all(p.grad.abs().sum() > 0 for p in model.prototype_head.parameters())
    assert next(model.backbone.parameters()).grad.abs().sum() > 0


def test_an_image_of_another_class_than_the_counts_is_named():
    module = build_method(_config(), COUNTS[:5])
    with pytest.raises(ValueError, match="labels"):
        module.step(_batch(module))  # digits 5..9 against 5 classes


@pytest.mark.parametrize(
    "override,problem",
    [
        ("method_options.bcl.alpha=-1", "method_options.bcl.alpha: must be >= 0, got -1.0"),
        (
            "method_options.bcl.beta=0 method_options.bcl.alpha=0",
            "method_options.bcl.beta: must be > 0 when alpha is 0 (no loss is left)",
        ),
        (
            "method_options.bcl.taus=2",
            "method_options.bcl.taus: unknown option (did you mean method_options.bcl.tau?); "
            "the options here: alpha, beta, tau",
        ),
    ],
)
def test_bad_options_are_one_line_naming_the_key(override, problem):
    with pytest.raises(ConfigError) as error:
        build_method(_config(*override.split()), COUNTS)
    assert str(error.value).startswith(f"Invalid config: {problem}")
    assert "\n" not in str(error.value)


def test_class_counts_are_needed_and_two_classes_at_least():
    with pytest.raises(ValueError, match="class_counts is needed by this method"):
        build_method(_config())
    with pytest.raises(ValueError, match="num_classes must be an int >= 2, got 1"):
        build_method(_config(), [10])


def test_dscl_compare_plans_bcl_as_itself(tmp_path):
    (plan,) = plan_runs("dscl_fashion_mnist_lt", ["bcl"], [1], tmp_path)
    assert plan.config.method == "bcl" and plan.config.seed == 1


@pytest.mark.slow
def test_a_tiny_run_logs_both_terms_and_scores_its_own_classifier(tmp_path):
    out = tmp_path / "run"
    args = ["--config", "bcl_digits_lt", *TINY, "trainer.epochs=1", "monitor.every=0"]
    assert train_main([*args, f"output_dir={out}"]) == 0
    header = (out / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"loss_step", "loss_ce", "loss_bcl", "lr"} <= set(header)
    own = json.loads((out / "metrics.json").read_text())["own_classifier"]
    assert own["label"] == "BCL's own classifier"
    assert set(own) == {"label", "overall", "many", "medium", "few"}
    assert all(0 <= own[group] <= 1 for group in ("overall", "many", "medium", "few"))
    assert (out / "classifier.pt").is_file()
