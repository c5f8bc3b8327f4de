"""Where a result came from: the package version and the git commit of its sources, the
machine and its load."""

import os
import subprocess
from pathlib import Path

from dscl_plugin._version import __version__


def package_stamp() -> dict[str, str | None]:
    """``dscl_plugin.__version__`` and, for a git checkout, the commit of its sources."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        git_commit = commit.stdout.strip() if commit.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        git_commit = None
    return {"version": __version__, "git_commit": git_commit}


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
