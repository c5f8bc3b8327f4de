"""Package shape: one-way layers, no import cycle, a light ``import dscl_plugin``, true pins."""

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dscl_plugin

ROOT = Path(__file__).resolve().parents[1]

CORE = ("checks", "functional", "losses", "memory", "pml", "pml_layouts", "pml_miner", "models",
        "backbones", "transforms", "lightly_registration", "precision")
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


def _package_graph():
    package = ROOT / "dscl_plugin"
    graph = {}
    for path in [*package.glob("*.py"), *package.glob("backbones/*.py")]:  # a sub-package: one node
        name = path.stem if path.parent == package else path.parent.name
        if name == "__init__":
            continue
        deps = {n.split(".")[1] for n in _imports(path) if n.startswith("dscl_plugin.")}
        old_deps, old_imports = graph.get(name, (set(), set()))
        graph[name] = (old_deps | deps - {name}, old_imports | _imports(path))
    return graph


def test_layers_point_one_way():
    graph = _package_graph()
    assert not graph["registry"][0], "registry.py must import nothing from dscl_plugin"
    for module in CORE:  # the core imports only the core and no training library
        deps, imports = graph[module]
        assert deps <= set(CORE), (module, deps - set(CORE))
        assert not {n.split(".")[0] for n in imports} & set(HEAVY), module
    assert "registry" not in graph["config"][0] and "methods" not in graph["config"][0]

    def visit(module, path):  # depth-first search for a cycle
        assert module not in path, f"import cycle: {' -> '.join(path + [module])}"
        for dep in graph.get(module, ((), ()))[0]:
            visit(dep, path + [module])

    for module in graph:
        visit(module, [])


@pytest.mark.slow
def test_import_dscl_plugin_loads_no_training_stack():
    code = (
        "import sys, dscl_plugin\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(dscl_plugin.available_methods())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["[]", "['dscl', 'supcon']"]


def _requirements():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options"]["install_requires"].strip().splitlines()
    return {re.split(r"[<>=!~ ]", line, 1)[0]: line for line in map(str.strip, lines)}


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

    from dscl_plugin import checkpoints, config, errors

    body = ast.parse((ROOT / "dscl_plugin" / "cli.py").read_text()).body
    top = {n.module for n in body if isinstance(n, ast.ImportFrom) and n.module.startswith("dscl")}
    assert top == {"dscl_plugin.errors"}
    graph = _package_graph()
    assert graph["errors"][0] == set() and graph["_version"][0] == set()
    assert config.ConfigError is errors.ConfigError
    assert checkpoints.CheckpointError is errors.CheckpointError


def test_test_modules_share_code_only_through_plain_modules():
    """Tests import shared references and helpers from ``tests/references.py`` and
    ``tests/helpers.py``, never from another ``test_*`` module or from ``conftest``."""
    tests = ROOT / "tests"
    shared = {path.stem for path in tests.glob("*.py")} - {"references", "helpers"}
    problems = [
        f"{path.name} imports {name}"
        for path in sorted(tests.glob("test_*.py"))
        for name in sorted(_imports(path))
        if name.split(".")[0] in shared
    ]
    assert not problems, problems
    assert (tests / "references.py").is_file() and (tests / "helpers.py").is_file()
