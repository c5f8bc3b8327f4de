"""The package as a user installs it: the built wheel carries the presets and a long
description whose links work on a package index page, and the installed copy (not this
source tree) runs the CLI and the digits example from an empty folder."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers import CONFIGS, ROOT, TINY


def run(args, cwd, env, timeout=300):
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this tree, built offline (no build isolation, no dependencies)."""
    dist = tmp_path_factory.mktemp("dist")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps"]
    run([*pip_wheel, "--no-build-isolation", "-q", "-w", str(dist)], ROOT, os.environ)
    (path,) = dist.glob("dscl_plugin-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_holds_the_presets_and_an_index_ready_description(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        description = archive.read(metadata).decode().partition("\n\n")[2]
    presets = {n.removeprefix("dscl_plugin/configs/") for n in names if "/configs/" in n}
    assert presets == {p.name for p in CONFIGS.glob("*.yaml")}
    assert description.startswith("# dscl-plugin\n")
    links = re.findall(r"\]\(([^)]*)\)", description)
    assert links and all(re.match(r"https?://", link) for link in links), links
    assert "Configs and CLI (`docs/configs.md`)" in description  # the link, as text


@pytest.mark.slow
def test_the_installed_wheel_runs_from_an_empty_folder(wheel, tmp_path):
    target, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    pip_install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q"]
    run([*pip_install, "--target", str(target), str(wheel)], tmp_path, os.environ)
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy, not this tree
    where = run(
        [sys.executable, "-c", "import dscl_plugin; print(dscl_plugin.__file__)"], work, env
    )
    assert where.stdout.startswith(str(target))

    cli = [sys.executable, "-m", "dscl_plugin.cli"]
    listed = run([*cli, "--list-configs"], work, env).stdout.splitlines()
    assert len(listed) == len(list(CONFIGS.glob("*.yaml")))
    printed = run([*cli, "--config", "dscl_digits_lt", "--print-config"], work, env)
    config = yaml.safe_load(printed.stdout)
    assert config["model"]["backbone"] == "small_cnn" and printed.stderr == ""

    example = work / "train_digits_lt.py"  # copied out of the repository
    shutil.copy(ROOT / "examples" / "train_digits_lt.py", example)
    overrides = [*TINY, "trainer.epochs=1", "output_dir=out"]
    run([sys.executable, str(example), *overrides], work, env)
    metrics = json.loads((work / "out" / "metrics.json").read_text())
    assert metrics["config"]["trainer"]["epochs"] == 1 and metrics["knn"]["precision_at_1"] > 0
    assert sorted(p.name for p in work.iterdir()) == ["out", "train_digits_lt.py"]
