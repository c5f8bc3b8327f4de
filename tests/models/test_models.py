"""build_backbone, DSCLModel and SupConModel: EMA, queue, region pooling, patches, BN."""

import ast
import copy
import runpy
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, training_losses
from torch import nn
from torchvision.ops import roi_align

import dscl_plugin
from dscl_plugin.losses import DSCLLoss, PBSDLoss, SupConLoss
from dscl_plugin.models import (
    DSCLModel,
    SupConModel,
    build_backbone,
    forward_without_stat_update,
    pool_regions,
)

B, L, VIEW, PATCH = 4, 3, 16, 8


def _model(cls=DSCLModel, queue_size: int = 16, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    backbone, dim = build_backbone("small_cnn")
    return cls(backbone, dim, proj_dim=8, queue_size=queue_size, **kwargs)


def _batch(
    seed: int = 0,
    b: int = B,
    num_patches: int = L,
    view: int = VIEW,
    patch: int = PATCH,
):
    g = torch.Generator().manual_seed(seed)
    view_q = torch.randn(b, 3, view, view, generator=g)
    view_k = torch.randn(b, 3, view, view, generator=g)
    patches = torch.randn(b, num_patches, 3, patch, patch, generator=g)
    xy = torch.randint(0, view // 2, (b, num_patches, 2), generator=g).float()
    wh = torch.randint(2, view // 2 + 1, (b, num_patches, 2), generator=g).float()
    boxes = torch.cat([xy, xy + wh], dim=-1)
    labels = torch.arange(b) % 2
    return view_q, view_k, patches, boxes, labels


def _fill_queue(model: nn.Module, steps: int = 2) -> None:
    model.train()
    for seed in range(10, 10 + steps):
        model(*_batch(seed))


def _buffers(module: nn.Module):
    return {name: b.clone() for name, b in module.named_buffers()}


# --- backbones -------------------------------------------------------------------


def test_resnet18_cifar_stem_feature_map():
    backbone, dim = build_backbone("resnet18", cifar_stem=True)
    assert dim == 512
    assert backbone[0].kernel_size == (3, 3) and backbone[0].stride == (1, 1)
    assert isinstance(backbone[3], nn.Identity)  # no max-pool
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 512, 4, 4)


def test_resnet18_imagenet_stem_and_zero_init_residual():
    backbone, _ = build_backbone("resnet18")
    assert backbone(torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)
    blocks = [m for m in backbone.modules() if hasattr(m, "bn2")]
    assert blocks and all(block.bn2.weight.eq(0).all() for block in blocks)
    backbone, _ = build_backbone("resnet18", zero_init_residual=False)
    assert all(m.bn2.weight.eq(1).all() for m in backbone.modules() if hasattr(m, "bn2"))


def test_resnet50_and_small_cnn_dims():
    assert build_backbone("resnet50")[1] == 2048
    backbone, dim = build_backbone("small_cnn")
    assert dim == 128 and backbone(torch.randn(2, 3, 32, 32)).shape == (2, 128, 8, 8)
    backbone, dim = build_backbone("cnn5")
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 64, 128, 128]
    assert dim == 128 and backbone(torch.randn(2, 3, 28, 28)).shape == (2, 128, 7, 7)


@pytest.mark.parametrize("name", ["vit_b_99", "resnet7", "mlp"])
def test_unknown_backbone_raises(name):
    with pytest.raises(ValueError, match="backbone names an unknown backbone"):
        build_backbone(name)


# --- EMA encoder -----------------------------------------------------------------


def test_momentum_encoder_starts_as_copy_and_follows_ema():
    model = _model(momentum=0.99)
    online = list(model.backbone.parameters()) + list(model.projection_head.parameters())
    ema = list(model.backbone_momentum.parameters()) + list(
        model.projection_head_momentum.parameters()
    )
    assert all(torch.equal(a, b) for a, b in zip(online, ema))
    with torch.no_grad():
        for p in online:
            p.add_(torch.randn_like(p))
    old = [p.clone() for p in ema]
    model.update_momentum(0.9)
    for p, p_old, p_online in zip(ema, old, online):
        torch.testing.assert_close(p, 0.9 * p_old + 0.1 * p_online)
    old = [p.clone() for p in ema]
    model.update_momentum()  # self.momentum
    for p, p_old, p_online in zip(ema, old, online):
        torch.testing.assert_close(p, 0.99 * p_old + 0.01 * p_online)


def test_keys_get_no_gradient_and_online_params_get_gradient_from_both_losses():
    model = _model()
    _fill_queue(model)
    view_q, view_k, patches, boxes, labels = _batch()
    view_q.requires_grad_(True)
    out = model(view_q, view_k, patches, boxes, labels)
    ema = list(model.backbone_momentum.parameters()) + list(
        model.projection_head_momentum.parameters()
    )
    assert not any(p.requires_grad for p in ema)
    online = [p for p in model.parameters() if p.requires_grad]
    assert len(online) == len(list(model.backbone.parameters())) + len(
        list(model.projection_head.parameters())
    )
    for name in ("loss_dscl", "loss_pbsd"):
        grads = torch.autograd.grad(out[name], online, retain_graph=True)
        assert all(g.abs().sum() > 0 for g in grads), name
    # the teacher (regions of the q view) is detached: PBSD reaches only the patches
    grad_q = torch.autograd.grad(out["loss_pbsd"], view_q, retain_graph=True, allow_unused=True)
    assert grad_q[0] is None
    out["loss"].backward()
    assert all(p.grad is None for p in ema)


# --- region pooling and the patch pass -------------------------------------------


def test_roi_align_region_of_constant_map_is_the_constant():
    constants = torch.tensor([1.5, -2.0, 7.0])
    feature_map = constants[:, None, None, None].expand(3, 5, 4, 4).clone()
    boxes = _batch(b=3, num_patches=6, view=32)[3]
    regions = pool_regions(feature_map, boxes, (32, 32))
    assert regions.shape == (3, 6, 5)
    torch.testing.assert_close(regions, constants[:, None, None].expand(3, 6, 5))


@pytest.mark.parametrize("map_width", [4, 8])
def test_spatial_scale_is_computed_from_the_map_and_view(map_width):
    feature_map = torch.zeros(1, 1, map_width // 2, map_width)
    feature_map[..., : map_width // 2] = 1.0  # left half of the image
    boxes = torch.tensor([[[0.0, 0.0, 12.0, 16.0], [20.0, 0.0, 32.0, 16.0]]])
    regions = pool_regions(feature_map, boxes, (16, 32), aligned=True)
    torch.testing.assert_close(regions.flatten(), torch.tensor([1.0, 0.0]))


def test_forward_without_stat_update_uses_batch_stats_and_keeps_buffers():
    backbone, _ = build_backbone("small_cnn")
    images = torch.randn(6, 3, 16, 16)
    before = _buffers(backbone)
    reference = copy.deepcopy(backbone)
    out = forward_without_stat_update(backbone, images)
    torch.testing.assert_close(out, reference(images))  # train mode: batch statistics
    for name, buffer in backbone.named_buffers():
        assert torch.equal(buffer, before[name]), name
    assert not all(torch.equal(b, before[n]) for n, b in reference.named_buffers())


def test_patch_pass_leaves_bn_running_stats_unchanged():
    model = _model()
    model.train()
    view_q, view_k, patches, boxes, labels = _batch()
    reference = copy.deepcopy(model.backbone)
    reference(view_q)  # the only BN update a training step may make
    model(view_q, view_k, patches, boxes, labels)["loss"].backward()
    expected = _buffers(reference)
    for name, buffer in model.backbone.named_buffers():
        torch.testing.assert_close(buffer, expected[name], rtol=0, atol=0)


# --- losses, queue and wiring ----------------------------------------------------


def test_losses_match_the_loss_modules_on_manual_features():
    model = _model(alpha=0.25, temperature=0.2)
    _fill_queue(model)
    model.eval()
    view_q, view_k, patches, boxes, labels = _batch(5)
    queue, queue_labels = model.memory_bank.get()
    assert queue.shape[0] == 2 * B
    with torch.no_grad():
        out = model(view_q, view_k, patches, boxes, labels)
        fmap = model.backbone(view_q)
        q = model.projection_head(fmap.mean(dim=(2, 3)))
        k = model.projection_head_momentum(model.backbone_momentum(view_k).mean(dim=(2, 3)))
        regions = roi_align(
            fmap,
            list(boxes),
            output_size=2,
            spatial_scale=fmap.shape[-1] / VIEW,
            aligned=False,
        ).mean(dim=(2, 3))
        teacher = model.projection_head(regions).reshape(B, L, -1)
        student = model.projection_head(
            torch.stack([model.backbone(patches[:, i]).mean(dim=(2, 3)) for i in range(L)], 1)
        )
    loss_dscl = DSCLLoss(alpha=0.25, temperature=0.2)(q, k, labels, queue, queue_labels)
    loss_pbsd = PBSDLoss(temperature=0.2)(student, teacher, k, queue)
    torch.testing.assert_close(out["loss_dscl"], loss_dscl)
    torch.testing.assert_close(out["loss_pbsd"], loss_pbsd)
    torch.testing.assert_close(out["loss"], loss_dscl + 1.5 * loss_pbsd)
    assert int(model.memory_bank.num_filled) == 2 * B  # eval: no enqueue


def test_keys_are_enqueued_with_labels_in_training_only():
    model = _model()
    model.train()
    view_q, view_k, patches, boxes, labels = _batch()
    ema = copy.deepcopy(nn.Sequential(model.backbone_momentum))
    with torch.no_grad():
        keys = model.projection_head_momentum(ema(view_k).mean(dim=(2, 3)))
    model(view_q, view_k, patches, boxes, labels)
    features, bank_labels = model.memory_bank.get()
    torch.testing.assert_close(features, nn.functional.normalize(keys, dim=1))
    assert bank_labels.tolist() == labels.tolist()
    with torch.no_grad():
        model(view_q, view_k, patches, boxes, labels)
    assert int(model.memory_bank.num_filled) == B


def test_pbsd_weight_zero_gives_exactly_loss_dscl_without_patches():
    model = _model(pbsd_weight=0.0)
    view_q, view_k, _, _, labels = _batch()
    out = model(view_q, view_k, None, None, labels)
    assert out["loss"] is out["loss_dscl"]
    assert out["loss_pbsd"].item() == 0.0
    reference = _model(pbsd_weight=0.0)
    assert torch.equal(reference(*_batch())["loss"], out["loss"])  # patches are ignored


def test_supcon_model_matches_supcon_loss():
    model = _model(SupConModel)
    _fill_queue(model)
    model.eval()
    view_q, view_k, _, _, labels = _batch(6)
    queue, queue_labels = model.memory_bank.get()
    with torch.no_grad():
        out = model(view_q, view_k, None, None, labels)
        q = model.projection_head(model.embed(view_q))
        k = model.projection_head_momentum(model.backbone_momentum(view_k).mean(dim=(2, 3)))
    torch.testing.assert_close(out["loss"], SupConLoss()(q, k, labels, queue, queue_labels))
    assert out["loss_dscl"] is out["loss"] and out["loss_pbsd"].item() == 0.0


def test_embed_and_state_dict_round_trip():
    model = _model()
    _fill_queue(model)
    assert model.embed(torch.randn(2, 3, VIEW, VIEW)).shape == (2, 128)
    restored = _model()
    restored.load_state_dict(model.state_dict())
    for a, b in zip(model.memory_bank.get(), restored.memory_bank.get()):
        torch.testing.assert_close(a, b)


@pytest.fixture
def one_thread():
    """resnet18 steps on a shared 2-core machine run ~10x faster without intra-op threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_sgd_steps_lower_the_loss_resnet18_cifar_stem(one_thread):
    torch.manual_seed(0)
    backbone, dim = build_backbone("resnet18", cifar_stem=True)
    model = DSCLModel(backbone, dim, queue_size=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = training_losses(model, optimizer, _batch(b=4, num_patches=1, view=32, patch=16), 3)
    assert losses[-1] < losses[0], losses


# --- input checks ------------------------------------------------------------------


def _replace(batch, index, value):
    return tuple(value if i == index else x for i, x in enumerate(batch))


@pytest.mark.parametrize(
    "index, value, match",
    [
        (3, torch.zeros(B, L, 3), r"boxes must be \(B, L, 4\)"),
        (3, torch.zeros(B, L + 1, 4), r"boxes must be \(B, L, 4\)"),
        (4, torch.zeros(B + 1, dtype=torch.long), r"labels must have one entry per feature row"),
        (4, torch.zeros(B), r"labels must be a 1-D integer tensor.*labels.long\(\)"),
        (4, torch.zeros(B, dtype=torch.bool), r"labels must be a 1-D integer tensor"),
        (2, torch.zeros(B, L, 3, VIEW + 1, VIEW + 1), "smaller than a patch"),
        (2, torch.zeros(B, 3, PATCH, PATCH), r"patches must be \(B, L, 3, s, s\)"),
        (2, None, "pbsd_weight > 0 needs patches"),
        (1, torch.zeros(B - 1, 3, VIEW, VIEW), "view_k must be"),
        (0, torch.zeros(B, 3, VIEW), "view_q must be"),
    ],
)
def test_bad_inputs_raise(index, value, match):
    with pytest.raises(ValueError, match=match):
        _model()(*_replace(_batch(), index, value))


def test_bad_constructor_arguments_and_vector_backbones_raise():
    with pytest.raises(ValueError, match="momentum"):
        _model(momentum=1.5)
    with pytest.raises(ValueError, match="pbsd_weight"):
        _model(pbsd_weight=-1.0)
    vector_backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * VIEW * VIEW, 8))
    model = DSCLModel(vector_backbone, 8, proj_dim=4, queue_size=0, pbsd_weight=0.0)
    with pytest.raises(ValueError, match="feature map"):
        model(*_replace(_batch(), 2, None))


@pytest.mark.slow
def test_lightly_example_runs(monkeypatch, capsys, one_thread):
    example = ROOT / "examples" / "lightly_training_loop.py"
    monkeypatch.setattr(sys, "argv", [str(example), "--steps", "2", "--batch-size", "16"])
    runpy.run_path(str(example), run_name="__main__")
    out = capsys.readouterr().out
    assert "queue 16" in out and "test 1-NN accuracy after 2 steps" in out


@pytest.mark.slow
def test_train_step_benchmark_parts_run(one_thread):
    path = ROOT / "benchmarks" / "train_step.py"
    bench_module = runpy.run_path(str(path))
    args = bench_module["_parse_args"](
        [
            "--batch-size",
            "2",
            "--num-patches",
            "2",
            "--queue-size",
            "8",
            "--setting",
            "resnet18_32px",
        ]
    )
    bench = bench_module["_Bench"]("dscl_pbsd", "resnet18_32px", args)
    parts = bench.parts()
    assert set(parts) == {
        "step",
        "online_fwd_bwd",
        "ema_fwd",
        "patch_fwd_bwd",
        "patch_separate_fwd_bwd",
    }
    for fn in parts.values():
        fn()
    assert int(bench.model.memory_bank.num_filled) == 8


# --- shuffle-BN of the key encoder ------------------------------------------------


def test_shuffle_bn_permutes_the_key_batch_and_keeps_eval_keys(monkeypatch):
    import dscl_plugin.models.dscl_model as models

    model = _model()
    model.eval()
    view_k = _batch()[1]
    shuffles, seen = [], []
    real_shuffle, real_forward = models.batch_shuffle, model._key_forward

    def spy_shuffle(batch, distributed=False):
        shuffled, shuffle = real_shuffle(batch, distributed)
        shuffles.append(shuffle)
        return shuffled, shuffle

    def spy_forward(images):
        seen.append(images)
        return real_forward(images)

    monkeypatch.setattr(models, "batch_shuffle", spy_shuffle)
    monkeypatch.setattr(model, "_key_forward", spy_forward)
    torch.manual_seed(3)
    with torch.no_grad():
        shuffled_keys = model._key(view_k)
        model.shuffle_bn = False
        plain_keys = model._key(view_k)
    (shuffle,) = shuffles
    assert not torch.equal(shuffle, torch.arange(B))  # the EMA net saw a permuted batch
    assert torch.equal(seen[0], view_k[shuffle]) and torch.equal(seen[1], view_k)
    torch.testing.assert_close(shuffled_keys, plain_keys, rtol=0, atol=0)  # eval: same keys


def _shuffle_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        model = _model(queue_size=8)  # the same weights on both ranks
        model.train()
        view_k = _batch(seed=50 + rank)[1]
        seen = []
        forward = model._key_forward
        model._key_forward = lambda images: (seen.append(images), forward(images))[1]
        torch.manual_seed(7)
        with torch.no_grad():
            keys = model._key(view_k)
        torch.save(dict(view_k=view_k, seen=seen[0], keys=keys), f"{out_dir}/shuffle{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_shuffle_bn_permutes_across_two_gloo_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(
        _shuffle_worker,
        args=(str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    ranks = [torch.load(tmp_path / f"shuffle{r}.pt", weights_only=True) for r in range(2)]
    model = _model(queue_size=8)
    model.train()
    with torch.no_grad():  # each rank's EMA forward in train mode: BN over the batch it saw
        outputs = [model._key_forward(r["seen"]) for r in ranks]
    crossed = 0
    for rank, r in enumerate(ranks):
        for j, image in enumerate(r["view_k"]):
            (where,) = [
                (other, i)
                for other in range(2)
                for i in range(B)
                if torch.equal(ranks[other]["seen"][i], image)
            ]
            crossed += where[0] != rank
            # its key was computed on the rank that received it and sent back in place
            torch.testing.assert_close(r["keys"][j], outputs[where[0]][where[1]])
    assert crossed > 0  # images really moved between the ranks


def test_supcon_model_is_the_dscl_model_with_supcon_loss_injected():
    supcon = _model(SupConModel)
    injected = _model(DSCLModel, pbsd_weight=0.0, criterion=SupConLoss())
    assert type(supcon.criterion) is SupConLoss and supcon.pbsd_weight == 0
    assert supcon.state_dict().keys() == _model().state_dict().keys()  # checkpoints load
    injected.load_state_dict(supcon.state_dict())
    outs = []
    for model in (supcon, injected):
        torch.manual_seed(5)  # the same shuffle-BN permutation
        outs.append(model(*_batch(7)))
    for key in ("loss", "loss_dscl", "loss_pbsd"):
        torch.testing.assert_close(outs[0][key], outs[1][key])
    torch.testing.assert_close(supcon.memory_bank.get()[0], injected.memory_bank.get()[0])


def test_an_injected_criterion_excludes_alpha_and_beta():
    with pytest.raises(ValueError, match=r"alpha/beta configure the default DSCLLoss.*beta=8"):
        _model(beta=8.0, criterion=SupConLoss())
    model = _model(criterion=DSCLLoss(alpha=0.5))
    assert model.criterion.alpha == 0.5 and model.pbsd_weight == 1.5


def test_one_queue_per_model_an_injected_criterion_must_not_own_a_bank():
    with pytest.raises(
        ValueError, match="criterion must not own a memory bank.*memory_bank_size=0"
    ):
        _model(criterion=SupConLoss(memory_bank_size=(16, 8)))
    with pytest.raises(ValueError, match="criterion must not own a memory bank"):
        _model(criterion=DSCLLoss(memory_bank_size=(16, 8)))


def test_the_model_queue_follows_the_update_rule_of_the_losses():
    """A step in eval mode with grad on (e.g. a validation loss) leaves the queue alone."""
    model = _model()
    model.eval()
    model(*_batch())
    assert int(model.memory_bank.num_filled) == 0
    model.train()
    model(*_batch())
    assert int(model.memory_bank.num_filled) == B


def test_supcon_model_takes_the_dscl_model_keywords_but_the_dscl_ones():
    model = _model(SupConModel, momentum=0.9, shuffle_bn=False, temperature=0.2)
    assert (model.momentum, model.shuffle_bn, model.criterion.temperature) == (0.9, False, 0.2)
    assert model.memory_bank.bank.shape == (16, 8)
    with pytest.raises(ValueError, match="alpha/beta configure the default DSCLLoss"):
        _model(SupConModel, alpha=0.5)
    with pytest.raises(TypeError, match="pbsd_weight"):
        _model(SupConModel, pbsd_weight=1.0)


def test_grad_ratio_needs_a_criterion_that_computes_it():
    class PlainLoss(nn.Module):
        def forward(self, query, key, labels, queue, queue_labels, queue_normalized):
            return (query - key).pow(2).mean()

    model = _model(criterion=PlainLoss(), pbsd_weight=0.0)
    model.track_grad_ratio = True
    with pytest.raises(ValueError, match="track_grad_ratio needs a criterion with pull_grad"):
        model(*_batch())


def _imported_modules(path: Path) -> set:
    """The ``dscl_plugin`` modules a source file imports (at any level)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return {n for n in names if n.startswith("dscl_plugin")}


def test_backbone_facts_come_without_the_model_code():
    package = Path(dscl_plugin.__file__).parent
    users = [*sorted((package / "backbones").glob("*.py"))]
    users += [package / "training" / "config.py", package / "training" / "checkpoint_io.py"]
    for path in users:
        model_code = ("dscl_plugin.models", "dscl_plugin.losses")
        assert not [n for n in _imported_modules(path) if n.startswith(model_code)], path
    assert "dscl_plugin.backbones" in _imported_modules(package / "models" / "feature_maps.py")
