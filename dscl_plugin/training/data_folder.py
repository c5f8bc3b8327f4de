"""``--data DIR``: a user's image folder (``DIR/train/<class>/<image>``,
``DIR/test/...``, ``DIR/val/...`` optional) as a config: the shipped recipe that fits
its images (or ``--config``'s) and the keys set from the data, said in one line.

The recipe, from the training images (the median longer side of a few per class, and
whether they are grey):

- at most :data:`SMALL_SIDE` px and grey: ``dscl_fashion_mnist_lt`` (a 5-layer CNN on
  28 px views, 6 epochs, a CPU recipe);
- at most :data:`SMALL_SIDE` px in colour: ``dscl_cifar10_lt`` (ResNet-18 with the CIFAR
  stem, 32 px views, 200 epochs; GPU advised);
- larger: ``dscl_imagenet_lt`` (ResNet-50, 224 px views, 200 epochs; GPUs).

The number of training images sets ``model.queue_size`` (at most the training set) and
``trainer.batch_size`` (at least :data:`~.data_fit.MIN_STEPS_PER_EPOCH` steps per
epoch), each lowered only where the recipe's is larger; without ``--config`` every image
is used (``data.imbalance_factor=null``) and the shot groups are the literature's
(many > 100, few < 20 training images). ``key=value`` overrides win over all of it.
"""

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dscl_plugin.data.image_folder import FolderSurvey, survey_image_folder
from dscl_plugin.errors import ConfigError, ConfigNote
from dscl_plugin.training.config import load_config
from dscl_plugin.training.data_fit import (
    LITERATURE_THRESHOLDS,
    batch_limit,
    queue_limit,
    val_notes,
)

SMALL_SIDE = 32  # px: Fashion-MNIST (28) and CIFAR (32) sized images
# (grey, small) -> the preset; large images of any colour take the ImageNet-LT recipe
RECIPES = {
    (True, True): "dscl_fashion_mnist_lt",
    (False, True): "dscl_cifar10_lt",
}
LARGE_RECIPE = "dscl_imagenet_lt"


@dataclass(frozen=True)
class DataFolderConfig:
    """The config ``--data`` makes: ``config`` (``--config``'s, else the preset that fits)
    with ``overrides`` (the data's keys, then the user's), and the ``notes`` that say so:
    one line on the recipe and the keys, and one on a ``val/`` split not used."""

    config: str
    overrides: list[str]
    notes: list[str]


def fitting_preset(survey: FolderSurvey) -> str:
    """The preset whose images are most like ``survey``'s (see the module's rule)."""
    return RECIPES.get((survey.grey, survey.side <= SMALL_SIDE), LARGE_RECIPE)


def data_folder_config(
    root: str | Path,
    config: str | None = None,
    overrides: Sequence[str] = (),
    output_dir: bool = True,
) -> DataFolderConfig:
    """The config of the image folder ``root`` (see the module): ``config`` (a preset's name
    or a YAML file) gives the recipe, else :func:`fitting_preset`; ``output_dir``: also set
    ``output_dir=outputs/${method}_<folder name>``.

    Raises:
        ConfigError: ``root`` lacks ``train/`` or ``test/``, or the config is invalid.
        DataError: a split holds other classes than ``train/``, or an image is unreadable.
    """
    try:
        survey = survey_image_folder(root)
    except FileNotFoundError as error:
        folder, why = Path(root), str(error)
        if not folder.is_dir():
            why = f"no folder '{folder}'"
        elif folder.name in ("train", "test", "val") and (folder.parent / "train").is_dir():
            why = f"'{folder}' is a split of the folder; point --data at '{folder.parent}'"
        raise ConfigError(
            f"--data {root}: {why}; the folder must hold train/<class>/<image> and "
            "test/<class>/<image> (val/ optional)"
        ) from None
    keys = ["data.name=image_folder", f"data.root={root}"]
    if config is None:
        keys += ["data.imbalance_factor=null"]
        keys += [f"{key}={value}" for key, value in LITERATURE_THRESHOLDS.items()]
    if output_dir:
        name = re.sub(r"[^\w.-]+", "_", Path(root).resolve().name) or "data"
        keys.append(f"output_dir=outputs/${{method}}_{name}")
    given = {item.split("=", 1)[0] for item in overrides}
    keys = [key for key in keys if key.split("=", 1)[0] not in given]  # the user's win
    recipe = config or fitting_preset(survey)
    with warnings.catch_warnings():  # the notes come with the config actually run
        warnings.simplefilter("ignore", ConfigNote)
        loaded = load_config(recipe, [*keys, *overrides])
    n = survey.num_train
    if "model.queue_size" not in given and loaded.model.queue_size > queue_limit(n):
        keys.append(f"model.queue_size={queue_limit(n)}")
    if "trainer.batch_size" not in given and loaded.trainer.batch_size > batch_limit(n):
        keys.append(f"trainer.batch_size={batch_limit(n)}")
    shown = [
        f"output_dir={loaded.output_dir}" if key.startswith("output_dir=") else key
        for key in keys
        if not key.startswith("data.root=")
    ]
    line = _line(survey, config, recipe, shown)
    return DataFolderConfig(recipe, [*keys, *overrides], [line, *val_notes(loaded)])


def _line(survey: FolderSurvey, config: str | None, recipe: str, keys: list[str]) -> str:
    """``--data DIR: <what it holds>; <the recipe>, with <the keys set>``."""
    train = survey.counts["train"]
    colour = "grey" if survey.grey else "colour"
    size = f"{'<=' if survey.side <= SMALL_SIDE else '>'} {SMALL_SIDE} px"
    why = f"--config {config}" if config is not None else f"preset {recipe} ({colour}, {size})"
    return (
        f"--data {survey.root}: {sum(train)} {colour} {survey.side} px training images in "
        f"{len(train)} classes ({max(train)} ... {min(train)}), "
        f"{sum(survey.counts['test'])} test images; {why}, with {' '.join(keys)}"
    )
