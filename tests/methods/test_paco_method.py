"""The PaCo method: its presets, options, views, model and step on the harness, its own
classifier; one step against PaCoLoss and the float64 loop reference on the model's own
outputs (official PaCo/LT/moco/builder.py and PaCo/LT/losses.py)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import CONFIGS, TINY
from references import naive_paco
from torch import nn

from dscl_plugin.data import build_dataset
from dscl_plugin.errors import ConfigError
from dscl_plugin.losses import PaCoLoss
from dscl_plugin.methods import Batch, PaCoMethod, PaCoOptions, build_method
from dscl_plugin.runs.compare import plan_runs
from dscl_plugin.runs.pipeline import run
from dscl_plugin.training.config import load_config

COUNTS = [144, 100, 70, 50, 35, 25, 20, 15, 14, 14]  # digits_lt at imbalance 10
OPTIONS = dict(alpha=0.3, beta=2.0, gamma=0.5, supervised_temperature=0.7)


def _config(*extra, preset="paco_digits_lt"):
    return load_config(CONFIGS / f"{preset}.yaml", [*TINY, *extra])


def _module(*extra):
    options = [f"method_options.paco.{k}={v}" for k, v in OPTIONS.items()]
    return build_method(_config(*options, *extra), COUNTS)


def _batch(module, indices=range(0, 400, 50)):
    dataset = build_dataset("digits_lt", "train", module.train_transform(), input_size=16)
    return Batch.of(module.collate_fn()([dataset[i] for i in indices]), 2)


@pytest.mark.parametrize(
    "preset", ["paco_digits_lt", "paco_fashion_mnist_lt", "paco_cifar100_lt", "paco_imagenet_lt"]
)
def test_presets_are_paco_with_the_official_loss_weights(preset):
    config = load_config(CONFIGS / f"{preset}.yaml")
    alpha = 0.01 if preset == "paco_cifar100_lt" else 0.05
    assert config.method == "paco" and config.method_options == {
        "paco": dict(alpha=alpha, beta=1.0, gamma=1.0, supervised_temperature=1.0)
    }
    assert config.model.pbsd_weight == 0 and config.model.num_patches == 0


def test_the_official_presets_take_the_official_runs_values():
    imagenet = load_config(CONFIGS / "paco_imagenet_lt.yaml")  # ImageNetLT_train_R50.sh
    m, o, t, d = imagenet.model, imagenet.optim, imagenet.trainer, imagenet.data
    assert (m.backbone, m.proj_dim, m.queue_size, m.momentum, m.temperature) == (
        "resnet50",
        128,
        8192,
        0.999,
        0.2,
    )
    assert (o.lr, o.weight_decay, o.warmup_epochs, o.cosine, t.batch_size, t.epochs) == (
        0.02,
        5e-4,
        10,
        True,
        128,
        400,
    )
    assert (d.color_jitter, d.jitter_prob, d.grayscale_prob, d.blur_prob) == (
        [0.4, 0.4, 0.4, 0.0],
        1.0,
        0.2,
        0.5,
    )  # the official key view, augmentation_sim
    assert not m.zero_init_residual and m.shuffle_bn
    cifar = load_config(CONFIGS / "paco_cifar100_lt.yaml")  # CIFAR100_train_imb0.01.sh
    m, o, t, d = cifar.model, cifar.optim, cifar.trainer, cifar.data
    assert (m.proj_dim, m.queue_size, m.momentum, m.temperature) == (32, 1024, 0.999, 0.05)
    assert (o.lr, o.weight_decay, o.warmup_epochs, t.batch_size, t.epochs) == (
        0.05,
        5e-4,
        10,
        128,
        400,
    )
    assert (d.imbalance_factor, d.crop_scale, d.jitter_prob, d.blur_prob) == (
        100,
        [0.2, 1.0],
        0.8,
        0.5,
    )  # the official key view, augmentation_sim_cifar


def test_the_model_is_the_official_one_and_the_classifier_is_its_own():
    module = _module()
    assert isinstance(module, PaCoMethod) and module.options == PaCoOptions(**OPTIONS)
    assert module.views().kinds == ("query", "query") and module.views().patches is None
    model = module.model
    loss = model.criterion
    assert isinstance(loss, PaCoLoss) and loss.memory_bank is None
    assert (loss.alpha, loss.beta, loss.gamma, loss.supervised_temperature) == (0.3, 2.0, 0.5, 0.7)
    assert loss.temperature == loss.base_temperature == 0.1  # model.temperature
    prior = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    torch.testing.assert_close(loss.log_prior, (prior + 1e-9).log())
    layers = list(model.projection_head.layers)  # Linear-BN-ReLU-Linear, both with bias
    assert [type(layer) for layer in layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert layers[0].bias is not None and layers[3].bias is not None
    assert (layers[0].in_features, layers[3].out_features) == (128, 16)
    assert module.own_classifier is model.classifier
    assert (model.classifier.in_features, model.classifier.out_features) == (128, 10)
    ema = [*model.backbone_momentum.parameters(), *model.projection_head_momentum.parameters()]
    assert not any(p.requires_grad for p in ema)
    assert model.memory_bank.size == (64, 16)


def _by_hand(model, batch):
    """The official step, written out on a copy of ``model``: q and the class logits from
    the query view's pooled backbone feature, k from the EMA encoder without gradient, the
    queue as it was; PaCoLoss and the loop reference of the official loss."""
    view_q, view_k = batch.views
    pooled = model.backbone(view_q).mean(dim=(2, 3))
    query, logits = model.projection_head(pooled), model.classifier(pooled)
    with torch.no_grad():
        key = model.projection_head_momentum(model.backbone_momentum(view_k).mean(dim=(2, 3)))
    queue, queue_labels = (t.clone() for t in model.memory_bank.get())
    loss = PaCoLoss(COUNTS, 0.3, 2.0, 0.5, 0.1, supervised_temperature=0.7)(
        query, key, batch.labels, logits, queue, queue_labels
    )
    reference = naive_paco(
        query, key, batch.labels, logits, queue, queue_labels, COUNTS, 0.3, 2.0, 0.5, 0.1,
        supt=0.7,
    )  # fmt: skip
    return loss, reference, key


def test_a_step_is_paco_loss_on_the_models_outputs_then_the_queue_takes_the_keys():
    module = _module().double()
    batch = _batch(module)
    batch = Batch(tuple(v.double() for v in batch.views), batch.labels)
    model = module.model
    for filled in (0, 8):  # the second step contrasts with the first step's keys
        reference = copy.deepcopy(model)
        loss, loop, key = _by_hand(reference, batch)
        terms = module.step(batch)
        assert set(terms) == {"loss", "loss_paco"} and terms["loss"] is terms["loss_paco"]
        torch.testing.assert_close(terms["loss"], loss, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(terms["loss"], loop, rtol=1e-10, atol=1e-12)
        params = [model.classifier.weight, next(model.backbone.parameters())]
        theirs = [reference.classifier.weight, next(reference.backbone.parameters())]
        got = torch.autograd.grad(terms["loss"], params)
        for g, want in zip(got, torch.autograd.grad(loss, theirs)):
            assert g.abs().sum() > 0  # the class logits train the classifier and backbone
            torch.testing.assert_close(g, want, rtol=1e-9, atol=1e-12)
        queue, queue_labels = model.memory_bank.get()
        assert len(queue) == filled + 8
        torch.testing.assert_close(queue[filled:], F.normalize(key, dim=1))
        assert torch.equal(queue_labels[filled:], batch.labels)


def test_the_ema_update_moves_the_key_encoder_and_an_eval_pass_keeps_the_queue():
    module = _module("model.momentum=0.5")
    model = module.model
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.backbone_momentum.parameters()]
    module.before_step()
    for ema, old, online in zip(
        model.backbone_momentum.parameters(), before, model.backbone.parameters()
    ):
        torch.testing.assert_close(ema, 0.5 * old + 0.5 * online)
    batch = _batch(module)
    model.eval()
    model(*batch.views, batch.labels)
    assert int(model.memory_bank.num_filled) == 0


def test_labels_and_class_counts_are_checked_by_name():
    module = _module()
    batch = _batch(module)
    bad = Batch(batch.views, torch.full_like(batch.labels, 10))
    with pytest.raises(ValueError, match=r"^labels"):
        module.step(bad)
    assert int(module.model.memory_bank.num_filled) == 0  # nothing enqueued
    with pytest.raises(ValueError, match=r"^class_counts is needed by this method"):
        build_method(_config())
    with pytest.raises(ValueError, match=r"^class_counts must be one int >= 1 per class"):
        build_method(_config(), [5, 0, 3])


@pytest.mark.parametrize(
    "override,problem",
    [
        ("method_options.paco.alpha=-1", "method_options.paco.alpha: must be >= 0, got -1.0"),
        ("method_options.paco.beta=0", "method_options.paco.beta: must be > 0, got 0.0"),
        (
            "method_options.paco.supervised_temperature=0",
            "method_options.paco.supervised_temperature: must be > 0, got 0.0",
        ),
        (
            "method_options.paco.supt=0.5",
            "method_options.paco.supt: unknown option (the official code's supt is "
            "method_options.paco.supervised_temperature)",
        ),
        (
            "method_options.paco.gama=0.5",
            "method_options.paco.gama: unknown option (did you mean method_options.paco.gamma?)",
        ),
        (
            "method_options.paco.num_positive=2",
            "method_options.paco.num_positive: unknown option (it is set as "
            "method_options.kcl.num_positive or method_options.tsc.num_positive)",
        ),
    ],
)
def test_bad_options_are_one_line_naming_the_key(override, problem):
    with pytest.raises(ConfigError) as error:
        build_method(_config(override), COUNTS)
    assert str(error.value).startswith(f"Invalid config: {problem}")


def test_dscl_compare_plans_paco_on_a_shared_config(tmp_path):
    plan = plan_runs("dscl_fashion_mnist_lt", ["supcon", "paco"], [0], tmp_path)
    configs = {p.variant.name: p.config for p in plan}
    paco, supcon = configs["paco"], configs["supcon"]
    assert paco.method == "paco" and paco.method_options == {}  # the defaults
    shared = ("backbone", "proj_dim", "queue_size", "momentum", "temperature", "shuffle_bn")
    assert [getattr(paco.model, k) for k in shared] == [getattr(supcon.model, k) for k in shared]
    assert paco.data == supcon.data and paco.optim == supcon.optim


@pytest.mark.slow
def test_a_tiny_run_scores_paco_s_own_classifier_by_shot_group(tmp_path):
    config = _config("trainer.epochs=1", "monitor.every=0", f"output_dir={tmp_path}")
    metrics = run(config)
    own = metrics["own_classifier"]
    assert own["label"] == "PaCo's own classifier"
    assert set(own) == {"label", "overall", "many", "medium", "few"}
    assert all(0 <= own[group] <= 1 for group in ("overall", "many", "medium"))
    assert (tmp_path / "classifier.pt").is_file()
    header = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"loss_paco", "queue_fill", "lr"} <= set(header)
