"""ViT backbones (Lightly's torchvision wrapper): token map, positional-encoding
interpolation, PBSD teacher on the token grid, DSCL steps, export, config and CLI."""

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import CONFIGS, training_losses
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from dscl_plugin.backbones.vit import ViTBackbone, build_vit, vit_spec
from dscl_plugin.backbones.weights import export_backbone, load_backbone_weights
from dscl_plugin.cli import train_main
from dscl_plugin.errors import CheckpointError, ConfigError
from dscl_plugin.methods import build_method
from dscl_plugin.models import DSCLModel, SupConModel, build_backbone, pool_regions
from dscl_plugin.training.config import load_config

DIGITS = CONFIGS / "dscl_digits_lt.yaml"
TINY_VIT = dict(image_size=16, vit_patch_size=4, vit_depth=2, vit_width=24, vit_heads=2)


def _tiny_vit(pool: str = "mean") -> ViTBackbone:
    torch.manual_seed(0)
    return build_backbone("vit_tiny", vit_pool=pool, **TINY_VIT)[0]


def _images(size: int, b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- token map ---------------------------------------------------------------------


def test_build_backbone_sizes_and_presets():
    backbone, dim = build_backbone("vit_tiny", **TINY_VIT)
    assert isinstance(backbone, ViTBackbone) and dim == 24 == backbone.feature_dim
    vit = backbone.torchvision_vit
    assert (vit.patch_size, len(vit.encoder.layers), vit.hidden_dim, vit.mlp_dim) == (
        4,
        2,
        24,
        96,
    )
    assert vit.encoder.layers[0].num_heads == 2 and isinstance(vit.heads, nn.Identity)
    assert vit_spec("vit_small") == vit_spec("vit_tiny", vit_width=384, vit_heads=6)
    assert (vit_spec("vit_b_16").width, vit_spec("vit_b_16").depth) == (768, 12)
    assert list(backbone.buffers()) == []  # BN-free: nothing for the patch pass to protect
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen == {
        "vit.mask_token",
        "vit.vit.encoder.pos_embedding",
    }  # unused; fixed sin-cos


def test_token_map_is_the_patch_tokens_on_their_grid():
    backbone = _tiny_vit()
    images = _images(16)
    tokens = backbone.vit.encode(images)  # (B, 1 + 16, C), class token first
    feature_map = backbone(images)
    assert feature_map.shape == (2, 24, 4, 4)
    for r in range(4):
        for c in range(4):
            torch.testing.assert_close(feature_map[:, :, r, c], tokens[:, 1 + 4 * r + c])


def test_grid_layout_token_r_c_sees_image_patch_r_c():
    # with no transformer layers, token (r, c) depends only on the pixels of patch (r, c)
    vit = VisionTransformer(16, 4, num_layers=0, num_heads=1, hidden_dim=8, mlp_dim=8)
    backbone = ViTBackbone(vit)
    images = _images(16)
    changed = images.clone()
    changed[:, :, 4:8, 8:12] += 1.0  # image patch row 1, column 2
    diff = (backbone(changed) - backbone(images)).abs().sum(dim=(0, 1))
    assert diff[1, 2] > 0 and diff.flatten().count_nonzero() == 1


def test_pooled_feature_mean_of_patch_tokens_or_class_token():
    images = _images(16)
    mean = _tiny_vit("mean")
    feature_map, pooled = mean.forward_features(images)
    torch.testing.assert_close(pooled, feature_map.mean(dim=(2, 3)))
    cls = _tiny_vit("cls")
    torch.testing.assert_close(cls.forward_features(images)[1], cls.vit.encode(images)[:, 0])
    model = DSCLModel(cls, 24, proj_dim=8, queue_size=0)
    torch.testing.assert_close(model.embed(images), cls.vit.encode(images)[:, 0])


# --- positional-encoding interpolation -----------------------------------------------


@pytest.mark.parametrize("size", [8, 12, 16, 28, 32])
def test_positional_encoding_is_interpolated_for_other_sizes(size):
    # no layers: token = LayerNorm(patch embedding + positional encoding), so the map
    # exposes the encoding: the native 4x4 grid resized bicubically to the image's grid
    torch.manual_seed(0)
    vit = VisionTransformer(16, 4, num_layers=0, num_heads=1, hidden_dim=8, mlp_dim=8)
    backbone = ViTBackbone(vit)
    images = _images(size)
    grid = size // 4
    pos = vit.encoder.pos_embedding[0, 1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=(grid, grid), mode="bicubic", antialias=True)
    tokens = vit.conv_proj(images) + pos  # (B, C, grid, grid)
    expected = vit.encoder.ln(tokens.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(backbone(images), expected)


def test_vit_small_runs_224_px_views_and_64_px_patches():
    torch.manual_seed(0)
    backbone, dim = build_backbone("vit_small", vit_depth=1)  # ViT-S/16 sizes, one layer
    assert dim == 384
    assert backbone(torch.randn(1, 3, 224, 224)).shape == (1, 384, 14, 14)
    assert backbone(torch.randn(2, 3, 64, 64)).shape == (2, 384, 4, 4)


@pytest.mark.parametrize(
    "size, match",
    [
        (18, "18 px is not a multiple of the ViT patch size 4 px"),
        (2, "2 px is not a multiple of the ViT patch size 4 px"),
    ],
)
def test_sizes_not_a_multiple_of_the_patch_size_raise(size, match):
    with pytest.raises(ValueError, match=match):
        _tiny_vit()(_images(size))


def test_other_bad_inputs_and_sizes_raise():
    backbone = _tiny_vit()
    with pytest.raises(ValueError, match=r"images must be square \(B, 3, H, H\)"):
        backbone(torch.randn(1, 3, 16, 8))
    with pytest.raises(ValueError, match="not a multiple of the ViT patch size"):
        build_backbone("vit_tiny", image_size=30, vit_patch_size=4)
    with pytest.raises(
        ValueError, match=r"vit_width must be a multiple of vit_heads \(3\), got 20"
    ):
        build_backbone("vit_tiny", vit_width=20)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        vit_spec("vit_tiny", vit_depth=0)
    with pytest.raises(ValueError, match="pool must be one of"):
        build_backbone("vit_tiny", vit_pool="max", **{k: v for k, v in TINY_VIT.items()})
    with pytest.raises(ValueError, match="names an unknown backbone 'vit_x'"):
        build_backbone("vit_x")
    # Lightly's scale factor sqrt(29^2 / 7^2) rounds a 7x7 grid to 28x28, not 29x29
    odd = build_vit(
        vit_spec("vit_tiny", vit_patch_size=4, vit_depth=1, vit_width=8, vit_heads=1), 28
    )
    with pytest.raises(ValueError, match="cannot resize the 7x7 positional grid to 29x29"):
        odd(torch.randn(1, 3, 116, 116))


# --- PBSD teacher on the token grid ----------------------------------------------------


def test_pbsd_teacher_pools_the_tokens_under_a_box():
    backbone = _tiny_vit()
    view = _images(32, b=1)  # 8x8 tokens of 4 px; spatial_scale = 8 / 32
    token_map = backbone(view).detach()
    r, c = 3, 5
    boxes = torch.tensor(
        [
            [
                [
                    4 * c,
                    4 * r,
                    4 * c + 8,
                    4 * r + 8,
                ],  # exactly the 2x2 tokens (3..4, 5..6)
                [4 * c, 4 * r, 4 * c + 4, 4 * r + 4],  # exactly token (3, 5)
                [0, 0, 32, 32],
            ]
        ],  # the whole view
        dtype=torch.float,
    )
    regions = pool_regions(token_map, boxes, (32, 32), aligned=True)[0]  # continuous coordinates
    torch.testing.assert_close(regions[0], token_map[0, :, r : r + 2, c : c + 2].mean(dim=(1, 2)))
    # one token: the 2x2 bilinear samples sit 1/4 token either side of its centre, so
    # the pooled value is token (r, c) with weights 1/8, 3/4, 1/8 along each axis
    weights = torch.tensor([1 / 8, 3 / 4, 1 / 8])
    window = token_map[0, :, r - 1 : r + 2, c - 1 : c + 2]
    expected = torch.einsum("chw,h,w->c", window, weights, weights)
    torch.testing.assert_close(regions[1], expected)
    torch.testing.assert_close(regions[2], token_map[0].mean(dim=(1, 2)), rtol=1e-4, atol=1e-3)


# --- training steps -------------------------------------------------------------------


def _batch(seed: int, b: int = 4, view: int = 16, patch: int = 8, num_patches: int = 2):
    g = torch.Generator().manual_seed(seed)
    view_q, view_k = torch.randn(2, b, 3, view, view, generator=g)
    patches = torch.randn(b, num_patches, 3, patch, patch, generator=g)
    xy = torch.randint(0, view - patch, (b, num_patches, 2), generator=g).float()
    return (
        view_q,
        view_k,
        patches,
        torch.cat([xy, xy + patch], dim=-1),
        torch.arange(b) % 2,
    )


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_dscl_step_with_patches_reaches_the_vit(pool):
    model = DSCLModel(_tiny_vit(pool), 24, proj_dim=8, queue_size=16)
    model.train()
    for seed in (10, 11):  # fill the queue so PBSD has [k, M] to distil over
        model(*_batch(seed))
    out = model(*_batch(0))
    assert all(torch.isfinite(out[k]) for k in ("loss", "loss_dscl", "loss_pbsd"))
    assert out["loss_pbsd"] > 0
    online = [(n, p) for n, p in model.backbone.named_parameters() if p.requires_grad]
    for name in ("loss_dscl", "loss_pbsd"):
        grads = torch.autograd.grad(out[name], [p for _, p in online], retain_graph=True)
        for (param_name, _), grad in zip(online, grads):
            assert grad.abs().sum() > 0, (name, param_name)


def test_adamw_steps_lower_the_loss():
    model = DSCLModel(_tiny_vit(), 24, proj_dim=8, queue_size=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    losses = training_losses(model, optimizer, _batch(0), 4)
    assert losses[-1] < losses[0], losses


def test_supcon_model_with_a_vit():
    model = SupConModel(_tiny_vit(), 24, proj_dim=8, queue_size=8)
    view_q, view_k, _, _, labels = _batch(0)
    out = model(view_q, view_k, None, None, labels)
    assert torch.isfinite(out["loss"]) and model.memory_bank.num_filled.item() == 4


# --- export --------------------------------------------------------------------------


def test_export_round_trip_into_the_torchvision_vit(tmp_path):
    backbone = _tiny_vit("cls")
    export_backbone(backbone, "vit_tiny", tmp_path / "backbone.pt")
    state = torch.load(tmp_path / "backbone.pt", weights_only=True)
    vit = VisionTransformer(16, 4, num_layers=2, num_heads=2, hidden_dim=24, mlp_dim=96)
    missing, unexpected = vit.load_state_dict(state, strict=False)
    assert sorted(missing) == ["heads.head.bias", "heads.head.weight"] and not unexpected
    vit.heads = nn.Identity()  # torchvision's forward then returns the class token
    images = _images(16)
    torch.testing.assert_close(vit(images), backbone.forward_features(images)[1])
    # torchvision weights (heads included) load back into build_backbone and ViTBackbone
    torch.save(vit.state_dict(), tmp_path / "torchvision.pt")
    fresh = build_backbone("vit_tiny", vit_pool="cls", **TINY_VIT)[0]
    assert not torch.equal(fresh(images), backbone(images))
    load_backbone_weights(fresh, "vit_tiny", tmp_path / "torchvision.pt")
    torch.testing.assert_close(fresh(images), backbone(images))
    wrapped = ViTBackbone(vit, initialize=False)  # keeps the loaded weights
    torch.testing.assert_close(wrapped(images), backbone(images))
    wider = build_backbone("vit_tiny", **{**TINY_VIT, "vit_width": 32})[0]
    with pytest.raises(CheckpointError, match="backbone.pt.*do not fit backbone 'vit_tiny'"):
        load_backbone_weights(wider, "vit_tiny", tmp_path / "backbone.pt")


# --- config and CLI ------------------------------------------------------------------


def test_config_builds_the_vit_and_adamw():
    config = load_config(
        DIGITS,
        [
            "model.backbone=vit_tiny",
            "model.vit_pool=cls",
            "optim.name=adamw",
            "optim.weight_decay=0.05",
            "optim.interval=epoch",
        ],
    )
    module = build_method(config)
    vit = module.backbone.torchvision_vit
    assert (vit.patch_size, len(vit.encoder.layers), vit.hidden_dim) == (4, 4, 96)
    assert (vit.image_size, module.backbone.pool) == (16, "cls")
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["weight_decay"] == 0.05
    sgd = build_method(load_config(DIGITS, ["optim.interval=epoch"])).configure_optimizers()
    assert isinstance(sgd["optimizer"], torch.optim.SGD)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data.input_size=18"], "data.input_size: Image size 18 px is not a multiple"),
        (
            ["model.patch_size=10"],
            "model.patch_size: Image size 10 px is not a multiple",
        ),
        (
            ["model.vit_width=100"],
            "model.vit_*: vit_width must be a multiple of vit_heads (3), got 100.",
        ),
        (["model.vit_pool=max"], "model.vit_pool: must be one of ['mean', 'cls']"),
        (["optim.name=adam"], "optim.name: must be one of ['sgd', 'adamw']"),
    ],
)
def test_config_rejects_bad_vit_settings(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(DIGITS, ["model.backbone=vit_tiny", *overrides])
    assert expected in str(info.value)


def test_patch_size_is_not_checked_without_pbsd():
    config = load_config(
        DIGITS,
        ["model.backbone=vit_tiny", "model.patch_size=10", "model.pbsd_weight=0"],
    )
    assert config.model.patch_size == 10


def test_imagenet_lt_vit_recipe_is_vit_small_with_adamw():
    c = load_config(CONFIGS / "dscl_imagenet_lt_vit.yaml")
    assert (c.model.backbone, c.data.input_size, c.model.patch_size) == (
        "vit_small",
        224,
        64,
    )
    assert (c.optim.name, c.model.vit_pool) == ("adamw", "mean")
    assert "OURS" in (CONFIGS / "dscl_imagenet_lt_vit.yaml").read_text()


@pytest.mark.slow
def test_cli_trains_and_evaluates_a_vit_on_digits(tmp_path, capsys):
    out = tmp_path / "vit"
    tiny = [
        "model.backbone=vit_tiny",
        "model.vit_depth=1",
        "model.vit_width=24",
        "model.queue_size=64",
        "model.proj_dim=16",
        "trainer.epochs=1",
        "trainer.batch_size=16",
        "trainer.limit_train_batches=2",
        "trainer.num_workers=0",
        "trainer.progress_bar=false",
        "optim.warmup_epochs=0",
        "optim.name=adamw",
        "optim.lr=1e-3",
        "probe.epochs=2",
        "probe.milestones=[1]",
        f"output_dir={out}",
    ]
    assert train_main(["--config", str(DIGITS), *tiny]) == 0
    assert "linear_probe/overall" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["linear_probe"]["overall"] <= 1.0
    state = torch.load(out / "backbone.pt", weights_only=True)
    vit = VisionTransformer(16, 4, num_layers=1, num_heads=3, hidden_dim=24, mlp_dim=96)
    missing, unexpected = vit.load_state_dict(state, strict=False)
    assert sorted(missing) == ["heads.head.bias", "heads.head.weight"] and not unexpected
