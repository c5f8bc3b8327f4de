"""Method registry: ``config.method`` names a registered method class.

A leaf module: it imports nothing from ``dscl_plugin``. Methods register themselves
with :func:`register_method` when their module is imported; the built-ins live in
:mod:`dscl_plugin.methods` (``dscl_plugin.register_method``,
``dscl_plugin.available_methods`` and the training pipeline import it). Third-party
methods reach ``dscl-train`` through :func:`load_plugins`: ``--import my_module``, or
an entry point in the group ``dscl_plugin.methods`` of an installed package::

    [options.entry_points]
    dscl_plugin.methods =
        my_dscl = my_package.methods

A method is a subclass of :class:`dscl_plugin.methods.Method`, built as
``cls(config, class_counts)``; what it declares is documented there and in
docs/methods.md, and :func:`dscl_plugin.methods.check_method` checks it against the
config before it is built.

Examples:
    >>> from dscl_plugin.methods import DSCLMethod
    >>> @register_method("my_method")
    ... class MyMethod(DSCLMethod): ...
    >>> available_methods()
    ['bcl', 'dscl', 'kcl', 'my_method', 'paco', 'supcon', 'tsc']
"""

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import TypeVar

ENTRY_POINT_GROUP = "dscl_plugin.methods"

_METHODS: dict[str, type] = {}
M = TypeVar("M", bound=type)


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator registering a ``LightningModule`` subclass under ``name``.

    Raises:
        TypeError: the decorated object is not a ``LightningModule`` subclass.
        ValueError: ``name`` is already registered by another class.
    """

    def decorator(cls: M) -> M:
        import pytorch_lightning as pl  # only a method author pays for Lightning here

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


def available_methods() -> list[str]:
    """Sorted names of the methods registered so far."""
    return sorted(_METHODS)


def get_method(name: str) -> type:
    """The class registered under ``name``.

    Raises:
        ValueError: ``name`` is not registered (the message lists the registered names).
    """
    if name not in _METHODS:
        raise ValueError(
            f"Unknown method {name!r}; registered methods: {sorted(_METHODS)}. A method "
            f"of your own must be imported first (dscl-train --import MODULE, or an entry "
            f"point in the group '{ENTRY_POINT_GROUP}')."
        )
    return _METHODS[name]


def did_you_mean(name: str, names: Sequence[str]) -> str:
    """``"did you mean 'paco'? "`` for the one of ``names`` closest to a mistyped method
    ``name`` (``difflib`` ratio >= 0.75: a typo, not another method), else ``""``."""
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.75)
    return f"did you mean {close[0]!r}? " if close else ""


def method_label(name: str) -> str:
    """The registered method ``name`` as reports and titles show it: its class's
    ``label`` (e.g. ``"KCL"``), else ``name``."""
    return getattr(_METHODS.get(name), "label", None) or name


_loaded_entry_points = False


def load_plugins(modules: Sequence[str] = ()) -> None:
    """Imports ``modules`` (dotted names, found from the current directory too, or
    ``.py`` file paths; e.g. from ``--import``) and, once per process, every entry point
    of the group ``dscl_plugin.methods``, so the methods they register become available.

    Raises:
        ImportError: a module or entry point cannot be imported (the message names it).
    """
    global _loaded_entry_points
    if not _loaded_entry_points:
        _loaded_entry_points = True
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                entry.load()
            except Exception as error:
                raise ImportError(
                    f"Cannot load method plugin {entry.name!r} = {entry.value!r} "
                    f"(entry point group '{ENTRY_POINT_GROUP}'): {error}"
                ) from error
    for module in modules:
        try:
            with _current_directory_on_path():
                _import(module)
        except Exception as error:
            raise ImportError(f"Cannot import method module {module!r}: {error}") from error


def _import(module: str) -> None:
    if not module.endswith(".py"):
        importlib.import_module(module)
        return
    path = Path(module).resolve()
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(f"no such file: '{module}'")
    sys.modules[path.stem] = loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)


@contextmanager
def _current_directory_on_path() -> Iterator[None]:
    """``import my_module`` finds ``./my_module.py`` as ``python -m`` would (console
    scripts do not put the current directory on ``sys.path``)."""
    added = "" not in sys.path and str(Path.cwd()) not in sys.path
    if added:
        sys.path.insert(0, str(Path.cwd()))
    try:
        yield
    finally:
        if added:
            sys.path.remove(str(Path.cwd()))
