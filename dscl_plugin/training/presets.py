"""The shipped presets: YAML configs inside the package (``dscl_plugin/configs/``), found
by name (``dscl_digits_lt``) from any folder, also as a ``base:``; and the recipe a config
file without a preset below it gets (:func:`recipe`)."""

import difflib
from collections.abc import Collection
from pathlib import Path

from dscl_plugin.errors import ConfigError
from dscl_plugin.safe_io import PathLike

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"
SUFFIX = ".yaml"


def preset_names() -> list[str]:
    """The names of the shipped presets, sorted."""
    return sorted(path.stem for path in PRESETS_DIR.glob(f"*{SUFFIX}"))


def preset_description(name: str) -> str:
    """The first comment line of preset ``name`` (without ``#``)."""
    for line in (PRESETS_DIR / f"{name}{SUFFIX}").read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def find_config(name: PathLike, folder: Path | None = None) -> Path:
    """The YAML file ``name`` means: a path (relative to ``folder`` when given, e.g. the
    file whose ``base:`` it is), else a shipped preset of that name (``dscl_digits_lt`` or
    ``dscl_digits_lt.yaml``).

    Raises:
        ConfigError: neither exists; the message names the closest preset and the
            closest YAML file in the folder ``name`` points into.
    """
    path = Path(name)
    candidate = path if folder is None else folder / path
    if candidate.is_file():
        return candidate
    preset = PRESETS_DIR / f"{path.name.removesuffix(SUFFIX)}{SUFFIX}"
    if len(path.parts) == 1 and preset.is_file():
        return preset
    raise ConfigError(
        f"Config file not found: '{candidate}', and no preset of that name.{_closest(candidate)} "
        "(dscl-train --list-configs lists the presets)"
    )


def _closest(candidate: Path) -> str:
    """`` Did you mean ...?`` naming the preset and the YAML file of ``candidate``'s
    folder closest to its name, or nothing when none is close."""
    stem = candidate.name.removesuffix(SUFFIX)
    guesses = [f"the preset '{p}'" for p in difflib.get_close_matches(stem, preset_names(), n=1)]
    folder = candidate.parent
    files = {p.stem: p for p in folder.glob(f"*{SUFFIX}")} if folder.is_dir() else {}
    guesses += [f"'{files[f]}'" for f in difflib.get_close_matches(stem, list(files), n=1)]
    return f" Did you mean {' or '.join(guesses)}?" if guesses else ""


def is_preset(path: Path) -> bool:
    """``path`` is a shipped preset file."""
    return path.resolve().parent == PRESETS_DIR


def dataset_preset(method: str, dataset: str) -> str | None:
    """The preset of ``method`` on ``dataset`` (``<method>_<dataset>``), if one is shipped."""
    name = f"{method}_{dataset}"
    return name if name in preset_names() else None


# keys (or whole sections) that say what to train on, where and what to watch, not how
# to train: a config file (and its base chain, with no preset in it) that sets only these
# starts from its dataset's preset
WHAT_AND_WHERE = (
    "method",
    "seed",
    "output_dir",
    "data.name",
    "data.root",
    "data.download",
    "data.train_list",
    "data.test_list",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.num_workers",
    "trainer.progress_bar",
    "trainer.logger",
    "monitor",
)
# the schema defaults that make the ImageNet-LT recipe's scale
IMAGENET_SCALE = {
    "model.backbone": "resnet50",
    "data.input_size": "224 px",
    "trainer.epochs": "200 epochs",
    "trainer.batch_size": "batch 256",
    "model.queue_size": "queue 65536",
}


def recipe(
    name: PathLike, keys: Collection[str], method: object, dataset: object
) -> tuple[str | None, str | None]:
    """For config file ``name``, whose ``base`` chain holds no preset and sets ``keys``
    (dotted paths), for ``method`` on ``dataset``: ``(preset, note)``, the preset it
    starts from and a one-line note saying which recipe it gets.

    - ``keys`` within :data:`WHAT_AND_WHERE` and a preset ``<method>_<dataset>`` shipped:
      that preset, and a note naming it;
    - else, when ``keys`` leave some of :data:`IMAGENET_SCALE` to the schema defaults:
      no preset, and a note naming them and the ``base:`` to write;
    - else ``(None, None)``: the file is a whole recipe.
    """
    preset = dataset_preset(str(method), str(dataset))
    recipe_keys = [k for k in keys if not any(_within(k, w) for w in WHAT_AND_WHERE)]
    if preset is not None and not recipe_keys:
        note = (
            f"'{name}' sets no recipe, so it starts from the preset '{preset}' "
            f"(write 'base: {preset}' in it to say so)"
        )
        return preset, note
    unset = [key for key in IMAGENET_SCALE if key not in keys]
    if not unset:
        return None, None
    preset = preset or dataset_preset("dscl", str(dataset))
    if preset is not None:
        start = f"to start from {dataset}'s recipe write 'base: {preset}' in it"
    else:
        start = (
            f"no preset is made for {dataset}: write 'base: <preset>' in it with the preset "
            "whose images are most like yours"
        )
    if dataset == "image_folder":
        start += ", or run dscl-train --data <folder> without --config, which picks one"
    defaults = ", ".join(f"{key} ({IMAGENET_SCALE[key]})" for key in unset)
    note = (
        f"'{name}' has no preset as its base, so {defaults} come from the schema defaults, "
        f"the ImageNet-LT recipe; {start} (dscl-train --list-configs lists them)"
    )
    return None, note


def _within(key: str, scope: str) -> bool:
    """``key`` is ``scope`` or a key of the section ``scope``."""
    return key == scope or key.startswith(f"{scope}.")
