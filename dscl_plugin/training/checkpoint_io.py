"""Lightning's checkpoint IO with crash-safe writes (:func:`dscl_plugin.safe_io.atomic_save`)."""

from typing import Any

from lightning_fabric.plugins import TorchCheckpointIO

from dscl_plugin.errors import CheckpointError
from dscl_plugin.safe_io import PathLike, atomic_save, load_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` writing local files with :func:`atomic_save` and
    raising :class:`CheckpointError` naming the file when one cannot be read.
    ``keep_previous`` keeps the replaced checkpoint as ``<name>.prev.ckpt``."""

    def __init__(self, keep_previous: bool = False) -> None:
        super().__init__()
        self.keep_previous = keep_previous

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        path: PathLike,
        storage_options: Any | None = None,
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not support storage_options.")
        atomic_save(checkpoint, path, keep_previous=self.keep_previous)

    def load_checkpoint(
        self,
        path: PathLike,
        map_location: Any = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        checkpoint = load_file(path)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CheckpointError(f"'{path}' is not a training checkpoint (no 'state_dict').")
        return checkpoint
