"""Run configuration: a dataclass schema merged with YAML and ``a.b=value`` overrides by OmegaConf.

:func:`load_config` returns a validated :class:`Config`. Every problem (unknown key, wrong
type, missing value, out-of-range setting, precision the device cannot run) raises
:class:`ConfigError` naming the key path, before anything is trained: the types here,
the values in :mod:`dscl_plugin.training.validation`.

A YAML file may extend another: ``base: dscl_fashion_mnist_lt.yaml`` (a path relative to
the extending file, or a preset's name; chains allowed) plus the keys it changes. Layers
merge in the order schema defaults <- base(s) <- file <- overrides, and a layer that sets
``model.alpha`` clears the ``model.beta`` of the layers below it (and vice versa): the two
are one setting. A file whose chain holds no preset may start from its dataset's preset
(:func:`dscl_plugin.training.presets.recipe`), and the :data:`DATASET_KEYS` of a layer
made for another dataset than the config's ``data.name`` do not apply
(:func:`reset_dataset_keys`); a :class:`ConfigNote` warning says so.
"""

import dataclasses
import difflib
import types
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from dscl_plugin.errors import ConfigError, ConfigNote
from dscl_plugin.safe_io import PathLike
from dscl_plugin.training.precision import resolve_accelerator, resolve_precision
from dscl_plugin.training.presets import find_config, is_preset, recipe
from dscl_plugin.training.schema import Config
from dscl_plugin.training.validation import validate

__all__ = [
    "Config",
    "ConfigError",
    "ConfigNote",
    "config_keys",
    "keys_like",
    "load_config",
    "to_dict",
    "to_yaml",
]

BASE_KEY = "base"
# keys that are one setting: a layer that sets one clears the other below it
EXCLUSIVE_KEYS = (("model.alpha", "model.beta"),)
# keys that describe one dataset, not how to train: a layer made for another dataset than
# the config's data.name leaves them to the layers below (in the end the schema defaults:
# every image, shot groups many > 100 and few < 20, outputs/<method>_<data.name>)
DATASET_KEYS = (
    "data.imbalance_factor",
    "data.train_list",
    "data.test_list",
    "eval.many_threshold",
    "eval.few_threshold",
    "output_dir",
)
COMMAND_LINE = "the command line"


def load_config(path: PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Schema defaults <- YAML file (after its ``base`` chain) <- ``a.b=value`` overrides,
    then :func:`validate`. A file whose chain holds no preset gets the recipe
    :func:`~dscl_plugin.training.presets.recipe` gives it, and the layers made for
    another dataset lose their :data:`DATASET_KEYS` (:func:`reset_dataset_keys`), each
    told by a :class:`ConfigNote` warning (before the value rules run, so it also
    explains the problems they find).

    Raises:
        ConfigError: the file cannot be read, or a key or value is invalid (every
            problem, each naming its key).
    """
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"Override {item!r} must have the form key.path=value.")
    chain = [] if path is None else read_chain(path)
    try:
        layers = [layer for _, layer in chain]
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        preset, note = _recipe(chain, layers)
        sources = [_source(file) for file, _ in chain] + [COMMAND_LINE]
        if preset is not None:
            below = read_chain(preset)
            layers = [layer for _, layer in below] + layers
            sources = [_source(file) for file, _ in below] + sources
        layers, reset = reset_dataset_keys(list(zip(sources, layers)))
        merged = OmegaConf.merge(OmegaConf.structured(Config), merge_layers(layers))
        config = cast(Config, OmegaConf.to_object(merged))
    except OmegaConfBaseException as error:
        raise ConfigError(_describe(error, None if path is None else Path(path))) from error
    # before the value rules: a problem they find may come from them
    for line in (note, reset_note(config, reset)):
        if line is not None:
            warnings.warn(line, ConfigNote, stacklevel=2)
    validate(config)
    t = config.trainer  # "auto" becomes what runs, so config.yaml and metrics.json say it
    t.precision = resolve_precision(t.precision, resolve_accelerator(t.accelerator))
    return config


def _recipe(
    chain: Sequence[tuple[Path, DictConfig]], layers: Sequence[DictConfig]
) -> tuple[str | None, str | None]:
    """:func:`recipe` of the file whose ``chain`` it is, with the method and dataset of all
    ``layers`` (the chain's, then the overrides); ``(None, None)`` when there is no file,
    its chain holds a preset, or the method or dataset is not set."""
    if not chain or is_preset(chain[0][0]):
        return None, None
    merged = cast(dict[str, Any], OmegaConf.to_container(merge_layers(layers)))
    method, dataset = merged.get("method"), (merged.get("data") or {}).get("name")
    if not isinstance(method, str) or not isinstance(dataset, str):
        return None, None
    keys = set().union(*(_leaf_keys(OmegaConf.to_container(layer)) for _, layer in chain))
    return recipe(chain[-1][0], keys, method, dataset)


def _source(file: Path) -> str:
    """A layer's file as a note names it: a preset by its name, else its path."""
    return f"'{file.stem if is_preset(file) else file}'"


# key -> (the layer that set it, the dataset of that layer, the value it set)
Reset = dict[str, tuple[str, str, Any]]


def reset_dataset_keys(layers: Sequence[tuple[str, DictConfig]]) -> tuple[list[DictConfig], Reset]:
    """``(source, layer)`` pairs, the lowest first, as layers without the
    :data:`DATASET_KEYS` of each layer whose dataset (the last ``data.name`` set in it or
    below it) is not the config's (the last ``data.name`` of all); and the keys so dropped
    that no later layer sets again."""
    names = [OmegaConf.select(layer, "data.name", default=None) for _, layer in layers]
    final = next((name for name in reversed(names) if name is not None), None)
    kept: list[DictConfig] = []
    reset: Reset = {}
    dataset = None
    for (source, layer), name in zip(layers, names):
        dataset = name if name is not None else dataset
        set_here = [key for key in DATASET_KEYS if _has_key(layer, key)]
        if dataset is None or dataset == final:
            kept.append(layer)
            for key in set_here:
                reset.pop(key, None)
            continue
        tree = cast(dict[str, Any], OmegaConf.to_container(layer))
        for key in set_here:
            parent, _, leaf = key.rpartition(".")
            section = tree[parent] if parent else tree
            reset[key] = (source, dataset, section.pop(leaf))
        kept.append(OmegaConf.create(tree))
    return kept, reset


def reset_note(config: Config, reset: Reset) -> str | None:
    """The one line that names the :func:`reset_dataset_keys` of ``config`` whose value
    changed, with their old and new values; None if none changed or ``data.name`` is no
    dataset (the value rules say so)."""
    from dscl_plugin.data import DATASET_NAMES

    if config.data.name not in DATASET_NAMES:
        return None
    values = OmegaConf.structured(config)
    changes = {}
    for key, (_, _, old) in reset.items():
        new = OmegaConf.select(values, key)
        if new != old:
            changes[key] = f"{key} {_shown(old)} -> {_shown(new)}"
    if not changes:
        return None
    source, dataset, _ = reset[next(iter(changes))]
    return (
        f"data.name is {config.data.name}, so the {dataset} settings of {source} do not apply: "
        f"{', '.join(changes.values())}; set a key in your file or as key=value to change it"
    )


def _shown(value: Any) -> str:
    return "null" if value is None else str(value)


def _leaf_keys(tree: object, path: str = "") -> set[str]:
    """The dotted paths of the values (not mappings) in the nested mapping ``tree``."""
    if not isinstance(tree, dict):
        return {path}
    return set().union(*(_leaf_keys(v, f"{path}.{k}" if path else str(k)) for k, v in tree.items()))


def read_chain(path: PathLike) -> list[tuple[Path, DictConfig]]:
    """``(file, mapping)`` of ``path`` (a file or a shipped preset's name) and of each file
    of its ``base`` chain, the deepest base first (each mapping without its ``base`` key).
    A ``base`` is a path relative to the extending file, or a preset's name.

    Raises:
        ConfigError: a missing or unparsable file, a ``base`` that is not a file name,
            or a cycle of ``base`` files.
    """
    layers: list[tuple[Path, DictConfig]] = []
    chain: list[Path] = []
    resolved = find_config(path)
    while True:
        if resolved.resolve() in chain:
            cycle = " -> ".join(f"'{p}'" for p in [*chain, resolved.resolve()])
            raise ConfigError(f"Config files extend each other in a cycle: {cycle}.")
        chain.append(resolved.resolve())
        layer = _read_yaml(resolved)
        base = layer.pop(BASE_KEY, None)
        layers.insert(0, (resolved, layer))
        if base is None:
            return layers
        if not isinstance(base, str) or not base:
            raise ConfigError(f"'{resolved}': {BASE_KEY} must be a YAML file name, got {base!r}.")
        try:
            resolved = find_config(base, folder=resolved.parent)
        except ConfigError as error:
            raise ConfigError(f"{BASE_KEY} of '{resolved}': {error}") from None


def _read_yaml(path: Path) -> DictConfig:
    try:
        layer = OmegaConf.load(path)
    except Exception as error:  # YAML syntax errors come from several libraries
        raise ConfigError(f"Cannot parse config file '{path}': {error}") from error
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"Config file '{path}' must hold a mapping of sections.")
    return layer


def merge_layers(layers: Sequence[DictConfig]) -> DictConfig:
    """``layers`` merged in order; a layer that sets one of :data:`EXCLUSIVE_KEYS` (not
    null) without the other clears the other in the layers below (both set in one
    layer stays an error for :func:`validate`)."""
    merged = OmegaConf.create()
    for layer in layers:
        for pair in EXCLUSIVE_KEYS:
            for key, other in (pair, pair[::-1]):
                sets_key = OmegaConf.select(layer, key, default=None) is not None
                if sets_key and not _has_key(layer, other) and _has_key(merged, other):
                    OmegaConf.update(merged, other, None)
        merged = cast(DictConfig, OmegaConf.merge(merged, layer))  # dicts merge to a dict
    return merged


def _has_key(tree: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(tree, parent, default=None) if parent else tree
    return OmegaConf.is_dict(node) and leaf in node


def to_dict(config: Config) -> dict[str, Any]:
    """The config as plain nested dicts and lists (for checkpoints and logs)."""
    return dataclasses.asdict(config)


def to_yaml(config: Config) -> str:
    """The config as YAML (every key, ``base`` chains merged): ``dscl-train --print-config``."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def _describe(error: OmegaConfBaseException, path: Path | None) -> str:
    key = getattr(error, "full_key", None) or ""
    message = str(getattr(error, "msg", error)).split("\n")[0].rstrip(".")
    where = f" (in '{path}' or the overrides)" if path is not None else ""
    if isinstance(error, MissingMandatoryValue):
        return f"Missing value for config key '{key}'{where}: set it in the file or as {key}=..."
    if isinstance(error, ValidationError) and key:
        return (
            f"Wrong type for config key '{key}'{where}: expected {_expected_type(key)}; {message}."
        )
    section, allowed = _section_keys(key)
    if not key:
        return f"Invalid config{where}: {message}."
    name = key.split(".")[len(section.split(".")) if section else 0]
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" Did you mean '{'.'.join(filter(None, (section, close[0])))}'?" if close else ""
    return (
        f"Unknown config key '{key}'{where}.{hint} "
        f"Allowed keys in '{section or '<root>'}': {', '.join(allowed)}."
    )


def config_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """Every key path of the schema, in its order: ``method``, ``data.name``, ..."""
    keys = []
    for f in dataclasses.fields(schema):
        hint = typing.get_type_hints(schema)[f.name]
        path = f"{prefix}{f.name}"
        section = isinstance(hint, type) and dataclasses.is_dataclass(hint)
        keys += config_keys(hint, f"{path}.") if section else [path]
    return keys


def keys_like(name: str) -> list[str]:
    """The key paths ``name`` (a command-line flag without ``--``, ``-`` for ``_``) may
    mean: the path itself, else the keys it is the last part of (``epochs``:
    ``trainer.epochs``, ``probe.epochs``), else the closest keys by name."""
    name = name.replace("-", "_")
    keys = config_keys()
    if name in keys:
        return [name]
    named = [key for key in keys if key.rpartition(".")[2] == name]
    if named:
        return named
    leaves = {key.rpartition(".")[2] for key in keys}
    close = set(difflib.get_close_matches(name, [*keys, *leaves], n=2, cutoff=0.8))
    return [key for key in keys if key in close or key.rpartition(".")[2] in close]


def _expected_type(key: str) -> str:
    """The schema type of ``key`` in words: ``int``, ``float or null``, ``list of float``."""
    schema, hint = Config, None
    for part in key.split("."):
        hints = typing.get_type_hints(schema) if dataclasses.is_dataclass(schema) else {}
        if part not in hints:
            return "the schema's type"
        hint = schema = hints[part]
    return _type_name(hint)


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (Union, types.UnionType):
        return f"{_type_name(args[0])} or null"
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(args[0])}"
    if hint is bool:
        return "true or false"
    return getattr(hint, "__name__", str(hint))


def _section_keys(key: str) -> tuple[str, list[str]]:
    """The deepest schema section on ``key``'s path and its field names."""
    schema, parts = Config, []
    for part in key.split(".")[:-1] if key else []:
        hints = typing.get_type_hints(schema)
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            break
        schema = hints[part]
        parts.append(part)
    return ".".join(parts), [f.name for f in dataclasses.fields(schema)]
