"""Crash-safe checkpoints, RNG state for exact resume, backbone export and ``init_from``."""

import os
import random
import shutil
from itertools import islice
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Union

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from torch import nn
from torch.utils.data import DataLoader

from dscl_plugin.backbones import PLAIN_CNNS, ViTBackbone
from dscl_plugin.errors import CheckpointError

PathLike = Union[str, Path]

# torchvision ResNet children in order; ``build_backbone`` keeps the first eight.
_RESNET_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def atomic_save(obj: Any, path: PathLike, keep_previous: bool = False) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace``:
    a crash mid-write leaves any previous file at ``path`` intact. ``keep_previous``
    first keeps the file being replaced as :func:`previous_path` (hard link or copy)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.is_file():
            _replace_with_copy(path, previous_path(path))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def previous_path(path: PathLike) -> Path:
    """``last.ckpt`` -> ``last.prev.ckpt``: the checkpoint before ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _replace_with_copy(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source`` (a hard link where possible), atomically."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def load_file(path: PathLike, hint: Optional[str] = None) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; errors name the file, why it
    cannot be read and what to do: ``hint``, or by default the resume advice (an older
    good checkpoint next to it, if there is one).

    Raises:
        CheckpointError: the file is missing, not a PyTorch file, corrupt, or holds
            Python objects that are not loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file not found: '{path}'.")
    if not _looks_like_torch_file(path):
        raise CheckpointError(
            f"'{path}' is not a PyTorch file (torch.save writes a zip archive). "
            f"{hint or _what_to_do(path)}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"Cannot read checkpoint '{path}': {_reason(error)}. "
                              f"{hint or _what_to_do(path)}") from None


def _looks_like_torch_file(path: Path) -> bool:
    """Starts like a zip archive (``torch.save``'s format, even if truncated) or a legacy
    pickle (protocol 2+)."""
    with open(path, "rb") as file:
        start = file.read(4)
    return start == b"PK\x03\x04" or (len(start) >= 2 and start[0] == 0x80 and start[1] >= 2)


def _reason(error: Exception) -> str:
    """Why ``torch.load`` failed, without torch's advice to load with ``weights_only=False``
    (which would run arbitrary code from the file)."""
    message = str(error)
    if "Weights only load failed" in message:
        return (
            "it holds Python objects other than tensors and plain containers, which are "
            "not loaded (loading them could run arbitrary code)"
        )
    first_line = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return f"the file is corrupt or truncated ({first_line[:200]})"


def _what_to_do(path: Path) -> str:
    previous = previous_path(path)
    if previous.is_file() and previous != path:
        return (
            f"The previous checkpoint '{previous}' is kept: resume from it with "
            f"--resume {previous}, or start over in a new output_dir."
        )
    return "Resume from another checkpoint with --resume PATH, or start over in a new output_dir."


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` writing local files with :func:`atomic_save` and
    raising :class:`CheckpointError` naming the file when one cannot be read.
    ``keep_previous`` keeps the replaced checkpoint as ``<name>.prev.ckpt``."""

    def __init__(self, keep_previous: bool = False) -> None:
        super().__init__()
        self.keep_previous = keep_previous

    def save_checkpoint(
        self, checkpoint: Dict[str, Any], path: PathLike, storage_options: Optional[Any] = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not support storage_options.")
        atomic_save(checkpoint, path, keep_previous=self.keep_previous)

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


class _SkipFirst:
    """``sampler`` without its first ``skip`` items (same length, so Lightning's counts
    of the epoch stay those of the full epoch)."""

    def __init__(self, sampler: Iterable, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator:
        return islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return len(self.sampler)


class LoaderPosition:
    """Where a :class:`ResumableDataLoader` stands: the generator state its current epoch
    started from and the batches the next ``iter()`` skips. Shared with the copies
    Lightning makes of the loader (e.g. to add a ``DistributedSampler``)."""

    def __init__(self) -> None:
        self.epoch_start_state: Optional[torch.Tensor] = None
        self.skip_batches = 0


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` (with a ``generator``) that can resume inside an epoch.

    Each ``iter()`` records in ``position`` the generator state it starts from (which
    fixes the epoch's shuffling and worker seeds); :meth:`resume_at` restores such a
    state and makes the next ``iter()`` skip the batches already trained on, at the
    sampler level (skipped images are never loaded). Used through
    :class:`MidEpochResumeCallback`.
    """

    def __init__(self, *args: Any, position: Optional[LoaderPosition] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.generator is None:
            raise ValueError("ResumableDataLoader needs generator=torch.Generator().")
        self.position = LoaderPosition() if position is None else position
        self._skipping = 0

    def resume_at(self, epoch_start_state: torch.Tensor, batches_done: int) -> None:
        """Start the next epoch from ``epoch_start_state`` without its first batches."""
        self.generator.set_state(epoch_start_state)
        self.position.skip_batches = batches_done

    def __iter__(self) -> Iterator:
        self.position.epoch_start_state = self.generator.get_state()
        self._skipping, self.position.skip_batches = self.position.skip_batches, 0
        try:
            return super().__iter__()
        finally:
            self._skipping = 0

    @property
    def _index_sampler(self) -> Iterable:
        sampler = super()._index_sampler
        if self._skipping and self._auto_collation:
            return _SkipFirst(sampler, self._skipping)
        return sampler


class MidEpochResumeCallback(pl.Callback):
    """Saves, in a checkpoint written inside an epoch, the loader's epoch-start generator
    state and the number of batches done; on resume the loader replays that epoch's order
    without those batches, so training continues at the right step with the images an
    uninterrupted run would see next (their augmentations are drawn from the restored RNG
    state, so they are not bit-identical). Put it after :class:`RNGStateCallback`."""

    def __init__(self, loader: ResumableDataLoader) -> None:
        self.loader = loader

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: Dict[str, Any]
    ) -> None:
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if 0 < done < trainer.num_training_batches:
            checkpoint["loader_position"] = {
                "epoch_start_state": self.loader.position.epoch_start_state,
                "batches_done": done,
            }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: Dict[str, Any]
    ) -> None:
        position = checkpoint.get("loader_position")
        if position is not None:
            self.loader.resume_at(position["epoch_start_state"], int(position["batches_done"]))


def export_backbone(backbone: nn.Module, backbone_name: str, path: PathLike) -> Path:
    """Save the backbone ``state_dict``; ResNets get torchvision key names (``conv1.weight``,
    ``layer1.0.bn1.running_mean``, ...), so ``torchvision.models.resnet50().load_state_dict(sd,
    strict=False)`` loads every feature layer and leaves ``fc`` untouched. A
    :class:`~dscl_plugin.backbones.ViTBackbone` saves its torchvision ``VisionTransformer``'s keys
    (``conv_proj.weight``, ``encoder.layers...``; no ``heads``), which load the same way into
    a torchvision ViT of the same sizes and image size."""
    is_vit = isinstance(backbone, ViTBackbone)
    if is_vit:
        backbone = backbone.torchvision_vit  # its heads are nn.Identity
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    if not is_vit and backbone_name not in PLAIN_CNNS:
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
            f"Weights in '{path}' do not fit backbone {backbone_name!r}: "
            f"{_first_line(error)}"
        ) from None


def _key_mismatch(module: nn.Module, state: Mapping[str, Any]) -> tuple:
    """``(missing, unexpected)`` key lists of ``module.load_state_dict(state)``."""
    expected = set(module.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def _first_line(error: Exception) -> str:
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
