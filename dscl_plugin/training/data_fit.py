"""How a config fits its training set, told before a run trains: a queue no larger than
the training set, enough steps per epoch, shot groups that hold classes, and a ``val/``
split that is not used. Each problem is one line naming the key and the value to set;
the same limits give ``dscl-train --data`` its values (:mod:`.data_folder`)."""

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from dscl_plugin.data.shots import empty_groups
from dscl_plugin.errors import ConfigNote
from dscl_plugin.training.schema import Config

# fewer steps per epoch than this is a batch too large for the data
MIN_STEPS_PER_EPOCH = 4
# the shot thresholds of the long-tail literature (ImageNet-LT, Places-LT, iNaturalist)
LITERATURE_THRESHOLDS = {"eval.many_threshold": 100, "eval.few_threshold": 20}


def power_of_two_at_most(n: int) -> int:
    """The largest power of two ``<= max(n, 1)``."""
    return 1 << (max(n, 1).bit_length() - 1)


def queue_limit(num_train: int) -> int:
    """The largest queue (a power of two) no larger than a training set of ``num_train``."""
    return power_of_two_at_most(num_train)


def batch_limit(num_train: int) -> int:
    """The largest batch (a power of two) that leaves :data:`MIN_STEPS_PER_EPOCH` steps
    per epoch on ``num_train`` images."""
    return power_of_two_at_most(num_train // MIN_STEPS_PER_EPOCH)


def training_notes(
    config: Config, class_counts: Sequence[int], has_queue: bool = True
) -> list[str]:
    """One line for a ``model.queue_size`` larger than the training set (for a method
    that ``has_queue``) and one for a ``trainer.batch_size`` that leaves fewer than
    :data:`MIN_STEPS_PER_EPOCH` steps per epoch (a batch larger than the training set is
    stage 1's error)."""
    n, queue, batch = sum(class_counts), config.model.queue_size, config.trainer.batch_size
    notes = []
    if has_queue and queue > n:
        notes.append(
            f"model.queue_size {queue} is larger than the training set ({n} images), so the "
            f"queue holds each image several times, from older encoders; set "
            f"model.queue_size={queue_limit(n)} or less"
        )
    if n // MIN_STEPS_PER_EPOCH < batch <= n:
        notes.append(
            f"trainer.batch_size {batch} leaves {n // batch} step(s) per epoch on {n} training "
            f"images ({n % batch} left out of each epoch); set trainer.batch_size="
            f"{batch_limit(n)} or less"
        )
    return notes + val_notes(config)


def shot_group_note(config: Config, class_counts: Sequence[int]) -> str | None:
    """One line naming the empty shot groups with the class sizes and the keys to set, or
    None when every group holds a class."""
    e = config.eval
    empty = empty_groups(class_counts, e.many_threshold, e.few_threshold)
    if not empty:
        return None
    sizes = sorted(class_counts, reverse=True)
    shown = ", ".join(map(str, sizes if len(sizes) <= 20 else [*sizes[:8], "...", *sizes[-8:]]))
    fixes = {
        "many": f"eval.many_threshold below {sizes[0]}",
        "medium": "eval.few_threshold and eval.many_threshold so that a class size lies "
        "between them",
        "few": f"eval.few_threshold above {sizes[-1]}",
    }
    return (
        f"shot group{'s' if len(empty) > 1 else ''} {' and '.join(empty)} will be empty: "
        f"{'; '.join(empty.values())} (class sizes {shown}); set "
        f"{' and '.join(fixes[g] for g in empty)}"
    )


def val_notes(config: Config) -> list[str]:
    """The line that says an ``image_folder``'s ``val/`` split is not used (none if it has
    no ``val/``)."""
    val = Path(config.data.root) / "val"
    if config.data.name != "image_folder" or not val.is_dir():
        return []
    images = sum(1 for path in val.rglob("*") if path.is_file())
    return [
        f"'{val}' ({images} files) is not used: stage 1 trains on train/, stage 2 fits its "
        "probe on train/ and scores test/ (no model selection)"
    ]


def tell(notes: Iterable[str | None]) -> None:
    """Each note (None skipped) as a :class:`ConfigNote` warning: one stderr line in the
    console scripts."""
    for note in notes:
        if note is not None:
            warnings.warn(note, ConfigNote, stacklevel=2)
