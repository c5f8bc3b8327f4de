"""The TSC method: its presets, options and views; one step equals TSCLoss (KCL during the
warm-up) on the model's own outputs, with its class and target parts as terms; its
targets and centroids in the state dict; and a run across the switch to TSC: the lr
schedule and optimiser start again, and a resume continues it exactly."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import CONFIGS, TINY, CrashAt, RecordSteps, state_copy

from dscl_plugin.cli import train_main
from dscl_plugin.data import build_dataset
from dscl_plugin.errors import ConfigError
from dscl_plugin.evaluation.curves import read_log, training_curves
from dscl_plugin.losses import KCLLoss, TSCLoss
from dscl_plugin.methods import Batch, TSCMethod, TSCOptions, build_method
from dscl_plugin.models.feature_maps import map_and_pooled
from dscl_plugin.runs.stage1 import train
from dscl_plugin.training.config import load_config

OFFICIAL = {  # README's ImageNet-LT command: --K 6 --targeted --tr 1 --sep_t --tw 0.2
    "num_positive": 6,
    "target_weight": 0.2,
    "target_repeat": 1,
    "separate_targets": True,
    "kcl_fraction": 0.5,
    "restart_schedule": True,
}


def _config(*extra, preset="tsc_digits_lt"):
    return load_config(CONFIGS / f"{preset}.yaml", [*TINY, *extra])


def _batch(module, size=16):
    """``size`` images of every class of digits_lt in the module's views."""
    dataset = build_dataset("digits_lt", "train", module.train_transform(), input_size=16)
    step = len(dataset) // size
    return Batch.of(module.collate_fn()([dataset[i * step] for i in range(size)]), 2)


@pytest.mark.parametrize(
    "preset", ["tsc_digits_lt", "tsc_fashion_mnist_lt", "tsc_cifar10_lt", "tsc_imagenet_lt"]
)
def test_presets_are_tsc_with_the_official_options(preset):
    config = load_config(CONFIGS / f"{preset}.yaml")
    assert config.method == "tsc" and list(config.method_options) == ["tsc"]
    assert {k: config.method_options["tsc"][k] for k in OFFICIAL} == OFFICIAL
    assert config.model.pbsd_weight == 0 and config.model.beta is None
    official = load_config(CONFIGS / "tsc_imagenet_lt.yaml")
    assert (official.trainer.epochs, official.trainer.batch_size, official.optim.lr) == (
        400,
        256,
        0.1,
    )
    assert (official.optim.weight_decay, official.optim.warmup_epochs) == (1e-4, 0)
    assert (official.model.queue_size, official.model.temperature) == (65536, 0.07)
    assert official.model.zero_init_residual is False  # torchvision's ResNet-50 default
    cifar = load_config(CONFIGS / "tsc_cifar100_lt.yaml")  # supp_release.pdf, Appendix A
    assert (cifar.trainer.epochs, cifar.trainer.batch_size, cifar.optim.lr) == (1000, 1024, 0.5)
    assert cifar.method_options["tsc"]["view_kind"] == "query"  # the CIFAR code's SimCLR views


@pytest.mark.parametrize("targeted", [False, True])
def test_a_step_is_the_loss_on_the_models_outputs_then_the_queue_update(targeted):
    fraction = 0 if targeted else 0.5  # no trainer: epoch 0, in the warm-up unless 0
    config = _config(
        "model.shuffle_bn=false",
        "method_options.tsc.num_positive=2",
        "method_options.tsc.target_repeat=2",
        f"method_options.tsc.kcl_fraction={fraction}",
    )
    module = build_method(config, [9] * 10).double()
    batch = _batch(module)
    assert isinstance(module, TSCMethod) and module.class_counts == (9,) * 10
    assert module.views().kinds == ("key", "key") and module.views().patches is None
    views = tuple(v.double() for v in batch.views)
    batch = Batch(views, batch.labels)
    model = module.model
    for _ in range(3):  # fill the queue, move the centroids
        model.update_momentum()
        module.step(batch)
    criterion = module.criterion
    assert criterion.targeted is targeted
    assert criterion.targets.shape == (10, 16)  # one target per class, model.proj_dim
    reference = TSCLoss(10, 16, 2, 0.1, 0.2, 2, True).double()
    reference.load_state_dict(criterion.state_dict())
    queue, queue_labels = (t.clone() for t in model.memory_bank.get())
    query = model.projection_head(map_and_pooled(model.backbone, views[0])[1])
    with torch.no_grad():
        key = model.projection_head_momentum(map_and_pooled(model.backbone_momentum, views[1])[1])
    torch.manual_seed(5)  # the draws of the k positives
    if targeted:
        want = reference(query, key, batch.labels, queue, queue_labels, queue_normalized=True)
    else:
        kcl = KCLLoss(2, 0.1)
        want = kcl(query, key, batch.labels, queue, queue_labels, queue_normalized=True)
    torch.manual_seed(5)
    terms = module.step(batch)
    assert set(terms) == {"loss", "loss_tsc", "loss_tsc_class", "loss_tsc_target"}
    assert terms["loss"] is terms["loss_tsc"]
    torch.testing.assert_close(terms["loss"], want, rtol=1e-12, atol=1e-12)
    parts = terms["loss_tsc_class"], terms["loss_tsc_target"]
    want_parts = reference.parts if targeted else (want.detach(), torch.zeros((), dtype=want.dtype))
    torch.testing.assert_close(parts, tuple(want_parts), rtol=1e-12, atol=1e-12)
    assert bool(parts[1] > 0) is targeted  # the target part is 0 in the warm-up
    total = parts[0] + 0.2 * parts[1]  # target_weight
    torch.testing.assert_close(total, terms["loss"].detach(), rtol=1e-15, atol=0)
    assert torch.equal(criterion.centroids, reference.centroids)  # moved in TSC only
    params = [p for p in module.parameters() if p.requires_grad]
    got_grads = torch.autograd.grad(terms["loss"], params, allow_unused=True)
    want_grads = torch.autograd.grad(want, params, allow_unused=True)
    for got, expected in zip(got_grads, want_grads, strict=True):
        assert (got is None) == (expected is None)
        if got is not None:
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # the keys entered the queue after the loss: 4 steps of 16
    bank, bank_labels = model.memory_bank.get()
    assert int(model.memory_bank.num_filled) == 64
    torch.testing.assert_close(bank[48:64], F.normalize(key, dim=1), rtol=1e-12, atol=1e-12)
    assert torch.equal(bank_labels[48:64], batch.labels)


def test_targets_and_centroids_round_trip_through_the_state_dict():
    config = _config("method_options.tsc.kcl_fraction=0")
    module = build_method(config, [1] * 10)
    batch = _batch(module)
    for _ in range(2):
        module.model.update_momentum()
        module.step(batch)
    state = module.state_dict()
    assert {"model.criterion.targets", "model.criterion.centroids"} <= set(state)
    fresh = build_method(config, [1] * 10)
    assert not torch.equal(fresh.criterion.centroids, module.criterion.centroids)
    fresh.load_state_dict(state)
    assert not [k for k, v in fresh.state_dict().items() if not torch.equal(v, state[k])]
    torch.manual_seed(1)
    want = module.step(batch)["loss"]
    torch.manual_seed(1)
    assert torch.equal(fresh.step(batch)["loss"], want)


@pytest.mark.parametrize(
    "override,problem",
    [
        (
            "model.queue_size=4",
            "model.queue_size: tsc draws method_options.tsc.num_positive=6 positives per "
            "anchor from the queue; set model.queue_size=6 or more (got 4)",
        ),
        (
            "method_options.tsc.target_repeat=0",
            "method_options.tsc.target_repeat: must be an int >= 1, got 0",
        ),
        (
            "method_options.tsc.kcl_fraction=1",
            "method_options.tsc.kcl_fraction: must be in [0, 1), got 1.0",
        ),
        (
            "method_options.tsc.view_kind=weak",
            "method_options.tsc.view_kind: must be one of ['key', 'query'], got 'weak'",
        ),
        (
            "method_options.tsc.tw=0.5",
            "method_options.tsc.tw: unknown option (the official code's tw is "
            "method_options.tsc.target_weight)",
        ),
        (
            "method_options.tsc.K=3",
            "method_options.tsc.K: unknown option (the official code's K is "
            "method_options.tsc.num_positive)",
        ),
        (
            "method_options.tsc.target_weigth=0.5",
            "method_options.tsc.target_weigth: unknown option (did you mean "
            "method_options.tsc.target_weight?)",
        ),
    ],
)
def test_bad_options_are_one_line_naming_the_key(override, problem):
    with pytest.raises(ConfigError) as error:
        build_method(_config(override), [1] * 10)
    assert str(error.value).startswith(f"Invalid config: {problem}")


def test_class_counts_are_needed_and_the_labels_must_fit_them():
    config = _config("method_options.tsc.kcl_fraction=0")
    with pytest.raises(ValueError, match="class_counts is needed by this method"):
        build_method(config)
    with pytest.raises(ValueError, match=r"class_counts must be one int >= 1 per class"):
        build_method(config, [5, 0, 3])
    module = build_method(config, [1] * 5)  # digits has 10 classes
    batch = _batch(module)
    module.model.update_momentum()
    with pytest.raises(ValueError, match=r"labels must be class ids >= 0 and < num_classes \(5\)"):
        module.step(batch)
    assert build_method(config, [1] * 10).options == TSCOptions(**{**OFFICIAL, "kcl_fraction": 0})


def test_the_switch_to_tsc_restarts_the_schedule_only_with_a_warm_up():
    def restarts(*extra):
        return build_method(_config("trainer.epochs=10", *extra), [1] * 10).schedule_restarts()

    assert restarts() == (5,)  # floor(0.5 x 10): the official epochs // 2
    assert restarts("method_options.tsc.kcl_fraction=0.25") == (2,)
    assert restarts("method_options.tsc.restart_schedule=false") == ()
    assert restarts("method_options.tsc.kcl_fraction=0") == ()  # TSC from the start


class RecordOptimizer(RecordSteps):
    """RecordSteps plus whether the optimiser's state is empty before each update."""

    def __init__(self):
        super().__init__()
        self.fresh = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.fresh.append((trainer.global_step, not optimizer.state))
        self.steps[-1] += (pl_module.criterion.targeted,)


SWITCH = ["optim.warmup_epochs=0", "trainer.checkpoint_every_n_steps=1", "data.pipeline=device"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 2-epoch run of 3 steps an epoch: KCL, then TSC."""
    pytest.importorskip("kornia")
    record = RecordOptimizer()
    out = tmp_path_factory.mktemp("straight")
    module = train(_config(*SWITCH, f"output_dir={out}"), callbacks=[record])
    return record, state_copy(module)


@pytest.mark.slow
def test_the_run_switches_to_tsc_with_a_new_schedule_and_optimiser(straight):
    record, _ = straight
    lrs = [s[3] for s in record.steps]
    assert lrs[3:] == pytest.approx(lrs[:3]) and lrs[0] == pytest.approx(0.1)  # cosine again
    assert lrs[2] == pytest.approx(0.0)
    assert [s[4] for s in record.steps] == [False] * 3 + [True] * 3  # KCL, then TSC
    assert [s for s, fresh in record.fresh if fresh] == [0, 3]  # a new optimiser state


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", [0, 2])  # at the switch, inside the TSC epoch
def test_a_resume_across_the_switch_equals_the_uninterrupted_run(straight, tmp_path, crash_at):
    record, final = straight
    config = _config(*SWITCH, f"output_dir={tmp_path / 'run'}")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, callbacks=[CrashAt(epoch=1, batch_idx=crash_at)])
    resumed = RecordOptimizer()
    module = train(config, resume=True, callbacks=[resumed])
    done = 3 + crash_at
    assert [s[:3] for s in resumed.steps] == [s[:3] for s in record.steps[done:]]
    assert resumed.fresh == record.fresh[done:]  # cleared at step 3 only, not again
    state = state_copy(module)
    assert "model.criterion.centroids" in final  # moved from step 3 on, saved, restored
    assert not [k for k in final if not torch.equal(final[k], state[k])]


@pytest.mark.slow
def test_one_tiny_run_trains_and_scores_from_the_cli(tmp_path):
    out = tmp_path / "run"
    args = ["--config", "tsc_digits_lt", *TINY, "trainer.epochs=1", f"output_dir={out}"]
    assert train_main([*args, "method_options.tsc.kcl_fraction=0"]) == 0
    header = (out / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"loss_tsc", "loss_tsc_class", "loss_tsc_target", "lr", "queue_fill"} <= set(header)
    drawn = training_curves(read_log(out / "logs" / "metrics.csv"))[0].series
    assert {"loss_tsc", "loss_tsc_class", "loss_tsc_target"} <= set(drawn)
    metrics = json.loads(Path(out / "metrics.json").read_text())
    assert {"many", "medium", "few", "overall"} <= set(metrics["linear_probe"])
