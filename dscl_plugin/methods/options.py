"""A method's own options: a dataclass of its keys, read from the run config's section
``method_options.<method name>`` and checked like the rest of the config (the types by
OmegaConf, the value rules by the dataclass's ``__post_init__``), every problem one
``"key: message"`` line.

Examples:
    >>> @dataclass(frozen=True)
    ... class KOptions:
    ...     k: int = 6
    >>> read_options(KOptions, {"k": "4"}, "method_options.kcl")
    KOptions(k=4)
"""

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dscl_plugin.errors import InvalidValue
from dscl_plugin.training.validation import raise_problems

OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that has none of its own."""


def option_names(options_type: type[Any]) -> list[str]:
    """The keys of the options dataclass ``options_type``."""
    return [f.name for f in dataclasses.fields(options_type)]


def option_problems(
    options_type: type[Any],
    values: object,
    key: str,
    elsewhere: Mapping[str, str] | None = None,
) -> list[str]:
    """The problems of ``values`` (the config's mapping at ``key``) as the options
    ``options_type``: not a mapping, an unknown key (with our name of an official code's
    name that the dataclass lists in a class attribute ``official_names``, e.g.
    ``{"tw": "target_weight"}``, else where ``elsewhere`` says that key belongs:
    ``{"beta": "model.beta"}``, else the closest key), a value of the wrong type, or a
    value its rules refuse; ``"key: message"`` each."""
    if not isinstance(values, Mapping):
        return [f"{key}: must be a mapping of option: value, got {values!r}"]
    names = option_names(options_type)
    official = getattr(options_type, "official_names", {})
    problems = []
    for name in values:
        if name in names:
            continue
        if name in official:
            hint = f"the official code's {name} is {key}.{official[name]}"
        elif elsewhere and name in elsewhere:
            hint = f"it is set as {elsewhere[name]}"
        else:
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f"did you mean {key}.{close[0]}?" if close else "no such option"
        allowed = ", ".join(names) or "none"
        problems.append(f"{key}.{name}: unknown option ({hint}); the options here: {allowed}")
    schema = OmegaConf.structured(options_type)
    for name in (n for n in values if n in names):
        try:
            OmegaConf.merge(schema, {name: values[name]})
        except OmegaConfBaseException as error:
            message = str(getattr(error, "msg", error)).split("\n")[0]
            problems.append(f"{key}.{name}: {message}")
    if not problems:
        try:
            _build(options_type, values)
        except InvalidValue as error:
            problems.append(f"{key}.{error.name}: {error.rule}")
    return problems


def read_options(options_type: type[OptionsT], values: object, key: str) -> OptionsT:
    """``options_type`` built from ``values`` (the config's mapping at ``key``; None or
    empty: the defaults).

    Raises:
        ConfigError: every problem :func:`option_problems` finds.
    """
    values = {} if values is None else values
    raise_problems(option_problems(options_type, values, key))
    assert isinstance(values, Mapping)  # option_problems refuses anything else
    return _build(options_type, values)


def _build(options_type: type[OptionsT], values: Mapping[str, Any]) -> OptionsT:
    """``options_type(**values)`` with the values converted to the dataclass's types."""
    merged = OmegaConf.merge(OmegaConf.structured(options_type), dict(values))
    converted = OmegaConf.to_container(merged, resolve=True)
    assert isinstance(converted, dict)
    return options_type(**{str(k): v for k, v in converted.items()})
