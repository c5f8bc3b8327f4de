"""Where a result came from: the package version and the git commit of its sources, the
machine and its load."""

import os
import subprocess
from pathlib import Path

from dscl_plugin._version import __version__


def package_stamp(source: Path = Path(__file__)) -> dict[str, str | None]:
    """``dscl_plugin.__version__`` and, where the package's ``source`` file is tracked by
    a git checkout, its commit: None for an installed package, even one installed inside
    another git repository (a virtual environment in a project)."""
    here = source.parent
    tracked = _git("ls-files", "--error-unmatch", "--", source.name, cwd=here)
    return {"version": __version__, "git_commit": tracked and _git("rev-parse", "HEAD", cwd=here)}


def _git(*args: str | Path, cwd: Path) -> str | None:
    """``git args``' output in ``cwd``, or None where it fails (no git, no checkout)."""
    try:
        done = subprocess.run(
            ["git", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def machine_description() -> str:
    """The CPU model (``lscpu``'s model name), its core count, the OS and any CUDA GPU:
    ``"AMD EPYC 7B13, 2 CPU cores, Linux 6.8.0"``."""
    import platform

    import torch

    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    names = [
        line.split(":", 1)[1].strip()
        for line in listing.splitlines()
        if line.startswith("Model name:")
    ]
    cpu = names[0] if names else platform.processor() or platform.machine()
    text = f"{cpu}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, rounded to 0.01 (None where the OS has none):
    how busy the machine was, for a timed result."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None
