"""Package shape: one-way layers, no import cycle, a light ``import dscl_plugin``, true pins."""

import configparser
import re

import pytest
from helpers import ROOT, run_python

PACKAGE = ROOT / "dscl_plugin"

# The package's top-level entries (a module or a sub-package folder), bottom layer first: an
# entry imports only entries of its own layer or below.
LAYERS = (
    ("errors", "_version", "torch_pair"),
    ("checks", "safe_io", "functional", "memory", "losses", "backbones", "models", "transforms",
     "data"),
    ("pml", "namespaces"),
    ("evaluation",),
    ("training",),
    ("methods",),
    ("runs",),
    ("cli",),
)  # fmt: skip
LAYER = {entry: level for level, entries in enumerate(LAYERS) for entry in entries}
CORE = LAYERS[1]
HEAVY = ("pytorch_lightning", "lightning", "lightning_fabric", "omegaconf", "matplotlib")


def _imports(path):
    """Top-level names of every module ``path`` imports (at any depth of the file)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "dscl_plugin":
                names |= {f"dscl_plugin.{alias.name}" for alias in node.names}
    return names


def _entry(path):
    """The top-level entry of the package a source file belongs to."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _module_graph():
    """``{module: (dscl_plugin modules it imports, every module it imports)}`` for every
    source file of the package (``__init__`` files as their package)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imports = _imports(path)
        graph[name] = ({n for n in imports if n.startswith("dscl_plugin.")}, imports)
    return graph


def test_every_folder_and_module_has_a_layer():
    entries = {
        _entry(p) for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem != "__init__"
    }
    assert entries == set(LAYER), (entries - set(LAYER), set(LAYER) - entries)
    top_modules = [p for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "_version")]
    assert (
        len(top_modules) <= 10
        and len([d for d in PACKAGE.iterdir() if (d / "__init__.py").is_file()]) >= 3
    )


def test_layers_point_one_way():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py":
            continue
        entry = _entry(path)
        for name in _imports(path):
            if not name.startswith("dscl_plugin."):
                continue
            target = name.split(".")[1]
            if LAYER[target] > LAYER[entry]:
                problems.append(f"{path.relative_to(ROOT)} imports {name} (a higher layer)")
        if entry in CORE:  # the core imports no training library
            heavy = {n.split(".")[0] for n in _imports(path)} & set(HEAVY)
            problems += [f"{path.relative_to(ROOT)} imports {n}" for n in heavy]
    assert not problems, problems
    registry = _imports(PACKAGE / "training" / "registry.py")
    assert not [n for n in registry if n.startswith("dscl_plugin")], "registry must be a leaf"


def test_no_import_cycle():
    graph = _module_graph()

    def resolve(name):  # ``from dscl_plugin.x import y``: y may be a module of x
        return name if name in graph else name.rpartition(".")[0]

    def visit(module, path):  # depth-first search for a cycle
        assert module not in path, f"import cycle: {' -> '.join([*path, module])}"
        for dep in graph.get(module, ((), ()))[0]:
            dep = resolve(dep)
            if dep != module and not module.startswith(dep + "."):  # a package's own __init__
                visit(dep, [*path, module])

    for module in graph:
        visit(module, [])


@pytest.mark.slow
def test_import_dscl_plugin_loads_no_training_stack():
    code = (
        "import sys, dscl_plugin\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(dscl_plugin.available_methods())\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["[]", "['bcl', 'dscl', 'kcl', 'paco', 'supcon', 'tsc']"]


def _requirements():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options"]["install_requires"].strip().splitlines()
    return {re.split(r"[<>=!~ ]", line, maxsplit=1)[0]: line for line in map(str.strip, lines)}


def test_version_pins_are_true():
    requirements = _requirements()
    # trainer.fit(..., weights_only=True) exists from pytorch-lightning 2.6 on
    assert requirements["pytorch-lightning"] == "pytorch-lightning>=2.6"
    for line in requirements.values():  # an upper cap only at a next major release
        for op, version in re.findall(r"(<=?)\s*([\d.]+)", line):
            assert op == "<" and re.fullmatch(r"\d+", version), line


def test_no_private_name_crosses_modules_and_no_module_imports_the_package_init():
    """``from dscl_plugin.x import _y`` and ``from dscl_plugin import <not a module>`` are
    both coupling to internals; dunder names (``__version__``) are public."""
    import ast

    package = ROOT / "dscl_plugin"
    problems = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if not (module or "").startswith("dscl_plugin"):
                continue
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not name.startswith("__"):
                    problems.append(f"{path.relative_to(ROOT)}: {node.module}.{name}")
                submodule = package / name
                if node.module == "dscl_plugin" and not (
                    submodule.with_suffix(".py").is_file() or submodule.is_dir()
                ):
                    problems.append(f"{path.relative_to(ROOT)}: dscl_plugin.{name} (the __init__)")
    assert not problems, problems


def test_cli_imports_only_the_leaf_errors_at_module_level():
    """The CLI catches ``ConfigError`` / ``CheckpointError`` from the leaf ``errors`` (which
    ``config`` and ``checkpoints`` raise) and imports the rest when a command runs."""
    import ast

    from dscl_plugin import errors, safe_io
    from dscl_plugin.training import config

    top = set()
    for path in (PACKAGE / "cli").glob("*.py"):
        body = ast.parse(path.read_text()).body
        top |= {n.module for n in body if isinstance(n, ast.ImportFrom) and "dscl" in n.module}
    assert {m for m in top if not m.startswith("dscl_plugin.cli")} == {"dscl_plugin.errors"}
    graph = _module_graph()
    assert graph["dscl_plugin.errors"][0] == set() and graph["dscl_plugin._version"][0] == set()
    assert config.ConfigError is errors.ConfigError
    assert safe_io.CheckpointError is errors.CheckpointError


def test_test_modules_share_code_only_through_plain_modules():
    """Tests import shared references and helpers from ``tests/references.py`` and
    ``tests/helpers.py``, never from another ``test_*`` module or from ``conftest``."""
    tests = ROOT / "tests"
    shared = {path.stem for path in tests.rglob("*.py")} - {"references", "helpers"}
    problems = [
        f"{path.name} imports {name}"
        for path in sorted(tests.rglob("test_*.py"))
        for name in sorted(_imports(path))
        if name.split(".")[0] in shared
    ]
    assert not problems, problems
    assert (tests / "references.py").is_file() and (tests / "helpers.py").is_file()


def test_the_package_shows_only_its_public_api():
    """``dir(dscl_plugin)`` is ``__all__``; besides those names and its loaded modules the
    package namespace holds no public name (no ``Any``, no helper imported to be called)."""
    import types

    import dscl_plugin

    assert dir(dscl_plugin) == sorted(dscl_plugin.__all__)
    stray = [
        name
        for name, value in vars(dscl_plugin).items()
        if not name.startswith("_")
        and name not in dscl_plugin.__all__
        and not isinstance(value, types.ModuleType)
    ]
    assert stray == []
    assert all(getattr(dscl_plugin, name) is not None for name in dscl_plugin.__all__)
