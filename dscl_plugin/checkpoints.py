"""Crash-safe checkpoints, RNG state for exact resume, backbone export and ``init_from``."""

import os
import random
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from torch import nn

from dscl_plugin.models import PLAIN_CNNS

PathLike = Union[str, Path]

# torchvision ResNet children in order; ``build_backbone`` keeps the first eight.
_RESNET_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


class CheckpointError(RuntimeError):
    """A checkpoint or weights file is missing, unreadable or does not fit the model."""


def atomic_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace``:
    a crash mid-write leaves any previous file at ``path`` intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_file(path: PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file not found: '{path}'.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"Cannot read checkpoint '{path}' (corrupt, truncated or not a torch file): {error}"
        ) from error


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` writing local files with :func:`atomic_save` and
    raising :class:`CheckpointError` naming the file when one cannot be read."""

    def save_checkpoint(
        self, checkpoint: Dict[str, Any], path: PathLike, storage_options: Optional[Any] = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not support storage_options.")
        atomic_save(checkpoint, path)

    def load_checkpoint(
        self, path: PathLike, map_location: Any = None, weights_only: Optional[bool] = None
    ) -> Dict[str, Any]:
        checkpoint = load_file(path)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CheckpointError(f"'{path}' is not a training checkpoint (no 'state_dict').")
        return checkpoint


def _capture_rng(generators: Mapping[str, torch.Generator]) -> Dict[str, Any]:
    version, mt_state, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Dict[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


class RNGStateCallback(pl.Callback):
    """Saves the Python, NumPy, torch (and CUDA) RNG states and the named generators
    (e.g. the train loader's shuffling generator) in every checkpoint and restores them
    on resume, before Lightning creates the first data iterator, so a resumed run draws
    the same batches and augmentations as an uninterrupted one."""

    def __init__(self, generators: Optional[Mapping[str, torch.Generator]] = None) -> None:
        self.generators = dict(generators or {})

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: Dict[str, Any]
    ) -> None:
        checkpoint["rng_states"] = _capture_rng(self.generators)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: Dict[str, Any]
    ) -> None:
        if "rng_states" in checkpoint:
            _restore_rng(checkpoint["rng_states"], self.generators)


def export_backbone(backbone: nn.Module, backbone_name: str, path: PathLike) -> Path:
    """Save the backbone ``state_dict``; ResNets get torchvision key names (``conv1.weight``,
    ``layer1.0.bn1.running_mean``, ...), so ``torchvision.models.resnet50().load_state_dict(sd,
    strict=False)`` loads every feature layer and leaves ``fc`` untouched."""
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    if backbone_name not in PLAIN_CNNS:
        state = {_to_torchvision_key(k): v for k, v in state.items()}
    return atomic_save(state, path)


def load_backbone_weights(backbone: nn.Module, backbone_name: str, path: PathLike) -> None:
    """Load a local ``state_dict`` file into ``backbone`` (exactly, every feature layer).

    Accepts :func:`export_backbone` files and torchvision ResNet ``state_dict`` s (``fc.*`` is
    ignored). Never downloads; errors name the file.
    """
    state = load_file(path)
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"'{path}' is not a state_dict of tensors.")
    if backbone_name not in PLAIN_CNNS:
        state = {_from_torchvision_key(k): v for k, v in state.items() if not k.startswith("fc.")}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"Weights in '{path}' do not fit backbone {backbone_name!r}: {error}"
        ) from error


def _to_torchvision_key(key: str) -> str:
    index, rest = key.split(".", 1)
    return f"{_RESNET_CHILDREN[int(index)]}.{rest}"


def _from_torchvision_key(key: str) -> str:
    child, rest = key.split(".", 1)
    if child in _RESNET_CHILDREN:
        return f"{_RESNET_CHILDREN.index(child)}.{rest}"
    return key
