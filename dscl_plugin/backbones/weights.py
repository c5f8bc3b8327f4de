"""Backbone weights in and out: ``backbone.pt`` files with torchvision key names and
``model.init_from`` (a local ``state_dict``; nothing is downloaded)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dscl_plugin.backbones.cnn import PLAIN_CNNS
from dscl_plugin.backbones.vit import ViTBackbone
from dscl_plugin.errors import CheckpointError
from dscl_plugin.safe_io import PathLike, atomic_save, load_file

# torchvision ResNet children in order; ``build_backbone`` keeps the first eight.
_RESNET_CHILDREN = (
    "conv1",
    "bn1",
    "relu",
    "maxpool",
    "layer1",
    "layer2",
    "layer3",
    "layer4",
)


def export_backbone(backbone: nn.Module, backbone_name: str, path: PathLike) -> Path:
    """Save the backbone ``state_dict``; ResNets get torchvision key names (``conv1.weight``,
    ``layer1.0.bn1.running_mean``, ...), so ``torchvision.models.resnet50().load_state_dict(sd,
    strict=False)`` loads every feature layer and leaves ``fc`` untouched. A
    :class:`~dscl_plugin.backbones.ViTBackbone` saves its torchvision ``VisionTransformer``'s keys
    (``conv_proj.weight``, ``encoder.layers...``; no ``heads``), which load the same way into
    a torchvision ViT of the same sizes and image size."""
    if isinstance(backbone, ViTBackbone):
        module, resnet_keys = backbone.torchvision_vit, False  # its heads are nn.Identity
    else:
        module, resnet_keys = backbone, backbone_name not in PLAIN_CNNS
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    if resnet_keys:
        state = {_to_torchvision_key(k): v for k, v in state.items()}
    return atomic_save(state, path)


def load_backbone_weights(backbone: nn.Module, backbone_name: str, path: PathLike) -> None:
    """Load a local ``state_dict`` file into ``backbone`` (exactly, every feature layer).

    Accepts :func:`export_backbone` files and torchvision ResNet or ViT ``state_dict`` s
    (``fc.*`` and ``heads.*`` are ignored). Never downloads; errors name the file.
    """
    state = load_file(path)
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"'{path}' is not a state_dict of tensors.")
    if isinstance(backbone, ViTBackbone):
        backbone = backbone.torchvision_vit
        state = {k: v for k, v in state.items() if not k.startswith("heads.")}
    elif backbone_name not in PLAIN_CNNS:
        state = {_from_torchvision_key(k): v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = _key_mismatch(backbone, state)
    if missing or unexpected:
        raise CheckpointError(
            f"Weights in '{path}' do not fit backbone {backbone_name!r}: {len(missing)} of its "
            f"keys missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. "
            f"{unexpected[:2]}); pass the backbone they were trained with (model.backbone)."
        )
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as error:  # same keys, other shapes
        raise CheckpointError(
            f"Weights in '{path}' do not fit backbone {backbone_name!r}: {_mismatch_details(error)}"
        ) from None


def _key_mismatch(module: nn.Module, state: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``(missing, unexpected)`` key lists of ``module.load_state_dict(state)``."""
    expected = set(module.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def _mismatch_details(error: Exception) -> str:
    """The first two detail lines of a ``load_state_dict`` error on one line (its first
    line only names the module), or the whole message if it has one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines[1:3] if len(lines) > 1 else lines)[:300]


def _to_torchvision_key(key: str) -> str:
    index, rest = key.split(".", 1)
    return f"{_RESNET_CHILDREN[int(index)]}.{rest}"


def _from_torchvision_key(key: str) -> str:
    child, rest = key.split(".", 1)
    if child in _RESNET_CHILDREN:
        return f"{_RESNET_CHILDREN.index(child)}.{rest}"
    return key
