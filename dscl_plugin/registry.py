"""Method registry: ``config.method`` names a registered ``LightningModule`` class.

A method class is constructed as ``cls(config)`` and provides the model and its loss
(``training_step``), ``train_transform()`` and ``collate_fn()`` for stage 1, ``embed(images)``
(pooled frozen features) and ``backbone`` for stage 2, and optionally a classmethod
``check_config(config) -> list[str]`` of config problems. Subclassing
:class:`dscl_plugin.methods.ContrastiveMethod` provides all of these.

Examples:
    >>> from dscl_plugin.methods import ContrastiveMethod
    >>> @register_method("my_method")
    ... class MyMethod(ContrastiveMethod):
    ...     def build_model(self): ...
    >>> available_methods()
    ['dscl', 'my_method', 'supcon']
"""

from typing import Callable, Dict, List, Type, TypeVar

import pytorch_lightning as pl

_METHODS: Dict[str, Type[pl.LightningModule]] = {}
M = TypeVar("M", bound=Type[pl.LightningModule])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator registering a ``LightningModule`` subclass under ``name``."""

    def decorator(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, pl.LightningModule)):
            raise TypeError(
                f"register_method({name!r}) expects a LightningModule subclass, got {cls!r}."
            )
        registered = _METHODS.get(name)
        if registered is not None and registered is not cls:
            raise ValueError(
                f"Method name {name!r} is already registered by "
                f"{registered.__module__}.{registered.__qualname__}."
            )
        _METHODS[name] = cls
        return cls

    return decorator


def _load_builtins() -> None:
    import dscl_plugin.methods  # noqa: F401  (registers "dscl" and "supcon")


def available_methods() -> List[str]:
    """Sorted names of the registered methods (built-ins included)."""
    _load_builtins()
    return sorted(_METHODS)


def get_method(name: str) -> Type[pl.LightningModule]:
    """The class registered under ``name``."""
    _load_builtins()
    if name not in _METHODS:
        raise ValueError(f"Unknown method {name!r}; registered methods: {sorted(_METHODS)}.")
    return _METHODS[name]


def build_method(config) -> pl.LightningModule:
    """``get_method(config.method)(config)`` for a validated :class:`~dscl_plugin.config.Config`."""
    return get_method(config.method)(config)
