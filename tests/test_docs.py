"""The README and docs/*.md as printed: Python blocks run, links resolve, commands parse.

- **Python blocks** of each page run in order, in one namespace per block that holds the
  page's earlier imports and the stand-ins for what the prose says is the reader's own
  (``STAND_INS``: ``loader``, ``model``, ``augment``, ``optimizer``, and the tensors
  ``query``, ``key``, ``labels``, ``queue`` ... of the loss examples). Nothing else is
  replaced: the README's Lightly loop trains one epoch on the bundled digits as printed.
- **Links**: every relative link and image resolves to a file, and every ``#anchor`` to a
  heading of its page (GitHub's slugs: lower case, spaces to ``-``, punctuation dropped).
- **Bash blocks**: every command is either smoke-run or skipped on purpose
  (``SKIPPED``, with the reason). The smoke forms: ``dscl-train`` / ``dscl-eval`` /
  ``examples/train_digits_lt.py`` compose their config with the printed overrides
  (the check that runs before any training; ``--data`` on a tiny image folder where the
  docs name the reader's ``my_images``), ``dscl-compare`` plans every run; scripts
  (``python -m benchmarks.<name>``, ``python -m tools.<name>``,
  ``bash benchmarks/remeasure.sh``) answer ``--help`` and know
  every printed ``--flag``; and the main example trains and evaluates for 2 steps.
"""

import copy
import importlib
import re
import runpy
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers import ROOT, image_folder
from torch import nn

from dscl_plugin.cli import compare_main, compare_parser, eval_main, train_main
from dscl_plugin.runs.compare import plan_runs
from dscl_plugin.training import registry
from dscl_plugin.training.config import load_config
from dscl_plugin.training.data_folder import data_folder_config

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAIN_EXAMPLE_CONFIG = "dscl_digits_lt"  # examples/train_digits_lt.py's config
OWN_IMAGES = "my_images"  # the reader's image folder (and config) of docs/compare.md
SKIPPED = {  # command prefix -> why its smoke form is not run
    "python3 -m venv": "creates a virtual environment",
    ". .venv/bin/activate": "activates the virtual environment",
    "pip install": "installs packages (.ci/run runs the install)",
    "apt-get install": "installs a system package",
    "pytest": "the test suite that runs this test",
    "ruff check": "the linter, run by .ci/run before the tests",
    "ruff format": "the formatter check, run by .ci/run before the tests",
    "mypy": "the type checker, run by .ci/run before the tests",
    "bash benchmarks/gpu_wheels.sh": "downloads wheels from the package index",
    "mkdir -p data": "makes the folder for the Fashion-MNIST files of a GPU lease",
    "cp /usr/share/datasets/fashion-mnist/": "copies the Fashion-MNIST files into the tree",
    "/tmp/venv-bare/bin/pip install": "installs packages into the bare venv",
    "PYTHON=/tmp/venv-bare/bin/python bash benchmarks/gpu_check.sh": (
        "the lease's dry run (~12 min)"
    ),
    'python -c "\nimport json\nfrom dscl_plugin.evaluation.diagnostics': (
        "reads the two diagnostics runs' logs"
    ),
}


def _page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _fenced(text: str, lang: str) -> list:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def _without_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _stand_ins() -> dict:
    torch.manual_seed(0)
    b, d, k = 8, 128, 32
    model = nn.Linear(16, d)
    labels = torch.arange(b) % 3
    x = torch.randn(b, 16)
    return {
        "query": torch.randn(b, d, requires_grad=True),
        "key": torch.randn(b, d),
        "labels": labels,
        "queue": torch.randn(k, d),
        "queue_labels": torch.arange(k) % 3,
        "patch_features": torch.randn(b, 2, d, requires_grad=True),
        "region_features": torch.randn(b, 2, d),
        "B": b,
        "x": x,
        "y": labels,
        "loader": [(x, labels)],
        "model": model,
        "key_model": copy.deepcopy(model),
        "augment": lambda images: images + 0.1 * torch.randn_like(images),
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
    }


def _run_python_blocks(path: Path) -> list:
    modules, namespaces = {}, []
    for block in _fenced(path.read_text(), "python"):
        namespace = {**_stand_ins(), **modules}
        exec(compile(block, str(path), "exec"), namespace)
        modules.update({k: v for k, v in namespace.items() if isinstance(v, types.ModuleType)})
        namespaces.append(namespace)
    return namespaces


@pytest.fixture
def local_registry(monkeypatch):
    """Methods registered by a docs block stay local to the test."""
    importlib.import_module("dscl_plugin.methods")  # built-ins registered before the copy
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))


SHOTS = ("overall", "many", "medium", "few")


def _finite(value) -> bool:
    return bool(torch.isfinite(value).all())


# what each page's blocks leave behind, one check per block
EXPECTED = {
    "README.md": [
        lambda ns: (
            ns["features"].shape == (300, 128)  # every digits test image embedded
            and int(ns["model"].memory_bank.num_filled) == 576
        ),  # 9 full batches of 64 keys
        lambda ns: _finite(ns["loss"]),
    ],
    "docs/method.md": [lambda ns: _finite(ns["loss"]) and _finite(ns["loss_pbsd"])],
    "docs/lightly.md": [lambda ns: _finite(ns["loss"]) and ns["bank"].get()[0].shape == (8, 128)],
    "docs/pml.md": [
        lambda ns: _finite(ns["loss"]),
        lambda ns: _finite(torch.tensor(ns["history"])) and 0 <= ns["after"] <= 1,
    ],
    "docs/methods.md": [
        lambda ns: "batch_supcon" in registry.available_methods(),
        lambda ns: set(ns["metrics"]["own_classifier"]) == {"label", *SHOTS},
    ],
    "docs/vit.md": [lambda ns: _finite(ns["out"]["loss"]) and ns["backbone"].feature_dim == 96],
}


def test_every_page_with_python_blocks_has_its_checks():
    with_blocks = {_page_id(p): len(_fenced(p.read_text(), "python")) for p in PAGES}
    assert {k: v for k, v in with_blocks.items() if v} == {k: len(v) for k, v in EXPECTED.items()}


@pytest.mark.parametrize("page", [p for p in EXPECTED if p != "README.md"])
def test_docs_python_blocks_run(page, local_registry):
    namespaces = _run_python_blocks(ROOT / page)
    for check, namespace in zip(EXPECTED[page], namespaces):
        assert check(namespace)


@pytest.mark.slow
def test_readme_python_blocks_run(local_registry):
    torch.set_num_threads(1)
    namespaces = _run_python_blocks(ROOT / "README.md")
    for check, namespace in zip(EXPECTED["README.md"], namespaces):
        assert check(namespace)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, spaces to '-', punctuation dropped."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set:
    seen, anchors = {}, set()
    for heading in re.findall(r"^#{1,6} (.+)$", _without_fences(path.read_text()), flags=re.M):
        slug = github_slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_github_slug():
    assert github_slug("Fashion-MNIST-LT: SupCon vs DSCL vs DSCL+PBSD (the headline evidence)") == (
        "fashion-mnist-lt-supcon-vs-dscl-vs-dsclpbsd-the-headline-evidence"
    )
    assert github_slug("Datasets (`dscl_plugin.data.build_dataset`)") == (
        "datasets-dscl_plugindatabuild_dataset"
    )


def _links(path: Path) -> list:
    text = _without_fences(path.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans hold no links
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("path", PAGES, ids=_page_id)
def test_relative_links_and_anchors_resolve(path):
    broken = []
    for link in _links(path):
        if re.match(r"[a-z]+:", link):
            continue  # https:, mailto:
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            broken.append(f"{link}: no file {file.relative_to(ROOT)}")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{link}: no heading with anchor #{anchor} in {file.name}")
    assert not broken, broken


def _commands() -> list:
    """(page, command) for every command of every bash block; `\\` lines and quoted
    newlines joined, comments dropped, `a && b` split, and of a ``dscl-*`` command the
    environment set in front of it and a trailing ``&`` dropped."""
    commands = []
    for path in PAGES:
        for block in _fenced(path.read_text(), "bash"):
            current = ""
            for line in block.splitlines():
                if not current and (not line.strip() or line.lstrip().startswith("#")):
                    continue
                current += line + "\n"
                if current.count('"') % 2 == 0 and not line.endswith("\\"):
                    logical = current.replace("\\\n", " ").strip()
                    if not logical.startswith("python -c"):
                        logical = logical.split("  #")[0].split(" # ")[0].strip()
                    commands += [
                        (_page_id(path), _dscl_command(c.strip())) for c in logical.split(" && ")
                    ]
                    current = ""
    return commands


def _dscl_command(command: str) -> str:
    """``CUDA_VISIBLE_DEVICES=0 dscl-compare ... &`` -> ``dscl-compare ...``."""
    found = re.fullmatch(r"(?:\w+=\S*\s+)+(dscl-.*?)(?:\s+&)?", command, flags=re.S)
    return found.group(1) if found else command


def _skip_reason(command: str):
    return next((why for prefix, why in SKIPPED.items() if command.startswith(prefix)), None)


COMMANDS = _commands()
SMOKE = [(page, c) for page, c in COMMANDS if _skip_reason(c) is None]


def test_bash_commands_are_smoke_run_or_skipped_on_purpose():
    runnable = (
        "dscl-train ",
        "dscl-eval ",
        "dscl-compare ",
        "python examples/",
        "python -m benchmarks.",
        "python -m tools.",
        "bash benchmarks/remeasure.sh",
    )
    unknown = [c for _, c in SMOKE if not c.startswith(runnable)]
    assert not unknown, f"add a smoke form or a SKIPPED reason for: {unknown}"
    assert len(COMMANDS) - len(SMOKE) == 19  # the skipped ones, listed in SKIPPED


def _help(entry: str, capsys, monkeypatch) -> str:
    """The ``--help`` text of a console script, of a script run as ``python path`` or of a
    module run as ``python -m name``."""
    monkeypatch.chdir(ROOT)
    if entry.endswith(".sh"):
        done = subprocess.run(["bash", entry, "--help"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout
    with pytest.raises(SystemExit) as done:
        if entry.startswith("dscl-"):
            mains = {"dscl-train": train_main, "dscl-eval": eval_main, "dscl-compare": compare_main}
            mains[entry](["--help"])
        elif entry.endswith(".py"):
            monkeypatch.setattr(sys, "argv", [entry, "--help"])
            runpy.run_path(str(ROOT / entry), run_name="__main__")
        else:
            monkeypatch.setattr(sys, "argv", [entry, "--help"])
            for name in (entry, f"{entry}.__main__"):  # run as a fresh __main__
                monkeypatch.delitem(sys.modules, name, raising=False)
            runpy.run_module(entry, run_name="__main__", alter_sys=True)
    assert done.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("page,command", SMOKE, ids=[c[:60] for _, c in SMOKE])
def test_bash_command_smoke_form(page, command, tmp_path, local_registry, monkeypatch, capsys):
    tokens = shlex.split(command)
    # dscl-x ..., python -m module ..., python path ..., bash path ...
    entry = tokens[0] if tokens[0].startswith("dscl-") else tokens[2 if tokens[1] == "-m" else 1]
    if entry.endswith((".py", ".sh")):
        assert (ROOT / entry).is_file(), entry
    flags = [t.split("=")[0] for t in tokens if t.startswith("--")]
    help_text = _help(entry, capsys, monkeypatch)
    assert all(flag in help_text for flag in flags), (flags, help_text)
    if {OWN_IMAGES, f"{OWN_IMAGES}.yaml"} & set(tokens):  # the reader's images, as the docs say
        monkeypatch.chdir(tmp_path)
        image_folder(tmp_path / OWN_IMAGES, [6, 4, 2], test=1)
        yaml_block = _fenced((ROOT / "docs/compare.md").read_text(), "yaml")[0]
        (tmp_path / f"{OWN_IMAGES}.yaml").write_text(yaml_block)
    if entry == "dscl-compare":  # every (method, seed) config, composed and checked
        args = compare_parser().parse_intermixed_args(tokens[1:])
        config, overrides = _with_data(args.data, args.config, args.overrides, False)
        plan_runs(config, args.methods, args.seeds, tmp_path, overrides)
    elif entry.startswith("dscl-") or entry == "examples/train_digits_lt.py":
        config = (
            tokens[tokens.index("--config") + 1] if "--config" in tokens else MAIN_EXAMPLE_CONFIG
        )
        overrides = [t for t in tokens if "=" in t and not t.startswith("-")]
        if "--data" in tokens:
            data = tokens[tokens.index("--data") + 1]
            config, overrides = _with_data(
                data, config if "--config" in tokens else None, overrides
            )
        if "--import" in tokens:  # the module docs/methods.md tells the reader to save
            block = next(b for b in _fenced((ROOT / "docs/methods.md").read_text(), "python"))
            (tmp_path / "my_method.py").write_text(block)
            monkeypatch.syspath_prepend(str(tmp_path))
            importlib.import_module(tokens[tokens.index("--import") + 1])
        load_config(config, overrides)


def _with_data(data, config, overrides, output_dir=True):
    """The config and overrides of ``--data`` (none: ``config`` and ``overrides``)."""
    if data is None:
        return config, overrides
    made = data_folder_config(data, config, overrides, output_dir)
    return made.config, made.overrides


@pytest.mark.slow
def test_main_example_trains_and_evaluates(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "examples/train_digits_lt.py",
            "trainer.epochs=1",
            "trainer.limit_train_batches=2",
            "probe.epochs=1",
            "probe.milestones=[]",
            "trainer.num_workers=0",
            "trainer.progress_bar=false",
            f"output_dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "linear_probe/overall" in done.stdout
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "backbone.pt").is_file()
