"""bf16 autocast on the CPU against float32, and ``trainer.precision: auto``.

The numerics test runs one DSCL+PBSD training step (query and key encoders, region
pooling, the batched patch pass, both losses, backward) in float32 and under CPU bf16
autocast from the same weights, queue and batch.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import CONFIGS

from dscl_plugin.errors import ConfigError
from dscl_plugin.losses import DSCLLoss, PBSDLoss
from dscl_plugin.models import DSCLModel, build_backbone
from dscl_plugin.training import precision
from dscl_plugin.training.config import load_config

CONFIG = CONFIGS / "dscl_fashion_mnist_lt.yaml"


def _dscl_pbsd_step(model: DSCLModel, batch, amp: bool):
    """loss, loss dtype and the gradient per parameter group (backbone, projection head)
    of one step of a copy of ``model``."""
    model = copy.deepcopy(model)
    torch.manual_seed(1)  # the same key-batch shuffle in both runs
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = model(*batch)
    out["loss"].backward()
    groups = {"backbone": model.backbone, "projection_head": model.projection_head}
    grads = {
        name: torch.cat([p.grad.flatten() for p in module.parameters()])
        for name, module in groups.items()
    }
    return out["loss"].detach(), out["loss"].dtype, grads


# (1 - cosine) bound per parameter group: the backbone's gradient passes five bf16 blocks
COSINE_GAP = {"backbone": 0.02, "projection_head": 0.001}


@pytest.mark.slow
def test_bf16_autocast_dscl_pbsd_step_matches_float32():
    """Under CPU bf16 autocast the loss is float32 and within 1e-3 (relative) of the float32
    loss; per parameter group the gradient's cosine similarity to float32 is >= 0.98
    (backbone) / 0.999 (projection head) and its norm is within 2 %.

    Why these tolerances: bf16 keeps 8 significant bits (a rounding error up to 2^-9 per
    value). The losses compute in float32 from L2-normalised features and average over
    the batch, so the loss moves far less than one bf16 step (measured: 2e-5; a loss
    computed in bf16 would also fail the dtype check). Every convolution and linear layer
    rounds its operands to bf16 forwards and backwards, so the gradient's direction
    drifts with depth: measured cosine 0.9936 for the 5-block backbone, 0.99997 for the
    2-layer head, norms within 0.2 %. The bounds allow about 3x the measured backbone
    gap (other platforms' kernels round differently); a scale error of the step, e.g. the
    loss counted twice, fails the norm check.
    """
    torch.manual_seed(0)
    backbone, dim = build_backbone("cnn5")
    model = DSCLModel(backbone, dim, proj_dim=64, queue_size=256, temperature=0.1,
                      pbsd_weight=1.5, roi_aligned=True)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    b, num_patches = 16, 2
    model.memory_bank.enqueue(
        F.normalize(torch.randn(256, 64, generator=g), dim=-1),
        torch.randint(10, (256,), generator=g),
    )
    xy = torch.randint(0, 14, (b, num_patches, 2), generator=g)
    batch = (
        torch.randn(b, 3, 28, 28, generator=g),
        torch.randn(b, 3, 28, 28, generator=g),
        torch.randn(b, num_patches, 3, 14, 14, generator=g),
        torch.cat([xy, xy + 14], dim=-1).float(),
        torch.randint(10, (b,), generator=g),
    )
    model.train()
    loss32, dtype32, grads32 = _dscl_pbsd_step(model, batch, amp=False)
    loss16, dtype16, grads16 = _dscl_pbsd_step(model, batch, amp=True)
    assert dtype32 == dtype16 == torch.float32
    assert abs(loss16 - loss32) / abs(loss32) < 1e-3
    for name, g32 in grads32.items():
        g16 = grads16[name]
        assert g16.dtype == torch.float32
        assert F.cosine_similarity(g16, g32, dim=0) >= 1 - COSINE_GAP[name], name
        assert abs(g16.norm() / g32.norm() - 1) < 0.02, name


def test_losses_compute_in_float32_under_bf16_autocast():
    """bf16 features (as an autocast encoder returns them) give a float32 loss equal to the
    loss of the same values in float32: the losses cast up before their logits."""
    g = torch.Generator().manual_seed(0)
    query, key = (F.normalize(torch.randn(8, 16, generator=g), dim=-1) for _ in range(2))
    patches, regions = (
        torch.randn(8, 3, 16, generator=g),
        torch.randn(8, 3, 16, generator=g),
    )
    queue = F.normalize(torch.randn(32, 16, generator=g), dim=-1)
    labels, queue_labels = (
        torch.randint(4, (8,), generator=g),
        torch.randint(4, (32,), generator=g),
    )
    bf16 = [t.bfloat16() for t in (query, key, patches, regions)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dscl = DSCLLoss(temperature=0.1)(bf16[0], bf16[1], labels, queue, queue_labels)
        pbsd = PBSDLoss(temperature=0.1)(bf16[2], bf16[3], bf16[1], queue)
    q, k, p, r = (t.float() for t in bf16)  # the same (rounded) values in float32
    assert dscl.dtype == pbsd.dtype == torch.float32
    torch.testing.assert_close(dscl, DSCLLoss(temperature=0.1)(q, k, labels, queue, queue_labels))
    torch.testing.assert_close(pbsd, PBSDLoss(temperature=0.1)(p, r, k, queue))


@pytest.mark.parametrize(
    "accelerator, cpu_bf16, cuda_bf16, expected",
    [
        ("cpu", True, False, "bf16-mixed"),
        ("cpu", False, True, "32-true"),
        ("gpu", False, True, "bf16-mixed"),
        ("gpu", True, False, "32-true"),
    ],
)
def test_auto_resolves_by_the_hardware_check(
    monkeypatch, capsys, accelerator, cpu_bf16, cuda_bf16, expected
):
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: cpu_bf16)
    monkeypatch.setattr(precision, "cuda_supports_bf16", lambda: cuda_bf16)
    assert precision.resolve_precision("auto", accelerator) == expected
    assert capsys.readouterr().err == ""  # quiet: a one-line CLI error stays one line
    assert precision.resolve_precision("32-true", accelerator) == "32-true"  # explicit wins
    assert precision.resolve_precision("bf16-mixed", accelerator) == "bf16-mixed"


@pytest.mark.parametrize("supported, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_config_auto_becomes_the_resolved_precision(monkeypatch, capsys, supported, expected):
    """The loaded config holds what runs (so config.yaml and metrics.json say it), and the
    CPU recipe's ``auto`` is forced to float32 by ``trainer.precision=32-true``."""
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: supported)
    config = load_config(CONFIG, ["trainer.precision=auto"])
    assert config.trainer.precision == expected
    assert load_config(CONFIG, ["trainer.precision=32-true"]).trainer.precision == "32-true"


def test_config_rejects_an_unknown_precision_naming_the_allowed_values():
    allowed = r"trainer\.precision: must be one of \['auto', '32-true'"
    with pytest.raises(ConfigError, match=allowed):
        load_config(CONFIG, ["trainer.precision=bf16"])


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile", ("amx_bf16", "avx512_bf16")),
        ("fpu avx2 avx512f avx512_bf16", ("avx512_bf16",)),
        ("fpu sse4_2 avx2 fma", ()),
    ],
)
def test_cpu_bf16_flags_reads_the_flags_line(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert precision.cpu_bf16_flags(cpuinfo) == expected
    assert precision.cpu_bf16_flags(tmp_path / "missing") == ()
