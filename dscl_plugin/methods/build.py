"""The run's method: the class registered as ``config.method``, checked against the config
(:func:`check_method`), and built with the training class counts (:func:`build_method`)."""

import difflib
from collections.abc import Sequence

from dscl_plugin.methods.base import Method
from dscl_plugin.methods.options import option_names
from dscl_plugin.training.registry import (
    available_methods,
    did_you_mean,
    get_method,
    load_plugins,
)
from dscl_plugin.training.schema import Config
from dscl_plugin.training.validation import raise_problems

PLUGIN_HINT = "a method of your own: dscl-train --import MODULE"


def registered_methods() -> dict[str, type[Method]]:
    """The registered methods that are :class:`Method` subclasses, by name."""
    found = {name: get_method(name) for name in available_methods()}
    return {name: cls for name, cls in found.items() if issubclass(cls, Method)}


def options_problems(config: Config, methods: dict[str, type[Method]]) -> list[str]:
    """The problems of every section of ``config.method_options``: one that names no
    registered method, or options its method refuses (a key of another method is named
    where it belongs, every place when several methods have it). A config may hold the
    options of several methods; only those of ``config.method`` are used."""
    problems = []
    for name in config.method_options:
        cls = methods.get(name)
        if cls is None:
            close = difflib.get_close_matches(str(name), list(methods), n=1)
            hint = f"did you mean method_options.{close[0]}? " if close else ""
            problems.append(
                f"method_options.{name}: no method {name!r} is registered ({hint}registered: "
                f"{sorted(methods)}; {PLUGIN_HINT})"
            )
            continue
        places: dict[str, list[str]] = {}
        for n, other in methods.items():
            for key in option_names(other.Options) if other is not cls else ():
                places.setdefault(key, []).append(f"{other.options_key(n)}.{key}")
        elsewhere = {key: " or ".join(where) for key, where in places.items()}
        problems += cls.option_problems(config, name, elsewhere)
    return problems


def check_method(config: Config) -> type[Method]:
    """The class registered as ``config.method`` (after loading the installed method
    plugins), once it and its options found no problem in ``config``.

    Raises:
        ConfigError: an unknown method, a method that is not a :class:`Method`, options
            that are not valid (:func:`options_problems`), or the method's own problems
            with the config (``check_config``), every problem on its line.
    """
    load_plugins()
    methods = registered_methods()
    if config.method not in methods:
        registered = available_methods()
        if config.method in registered:
            problem = (
                f"{config.method!r} is registered by {get_method(config.method).__qualname__}, "
                "which is not a dscl_plugin.methods.Method subclass"
            )
        else:
            hint = did_you_mean(str(config.method), registered)
            problem = (
                f"unknown method {config.method!r}; {hint}registered: {registered} ({PLUGIN_HINT})"
            )
        raise_problems([f"method: {problem}"])
    cls = methods[config.method]
    problems = [*options_problems(config, methods), *cls.check_config(config)]
    if config.trainer.log_grad_ratio and not cls.reports_grad_ratio:
        problems.append(
            f"trainer.log_grad_ratio: {config.method} does not report the pull-gradient "
            "ratio; set trainer.log_grad_ratio=false"
        )
    raise_problems(problems)
    return cls


def build_method(config: Config, class_counts: Sequence[int] | None = None) -> Method:
    """The run's method module, ``cls(config, class_counts)`` for the class
    :func:`check_method` returns; ``class_counts``: the number of training images of
    each class (the training set's ``class_counts``; needed by some methods).

    Raises:
        ConfigError: see :func:`check_method`.
        ValueError: ``class_counts`` missing where the method needs them, or not one
            count per class.
    """
    return check_method(config)(config, class_counts)
