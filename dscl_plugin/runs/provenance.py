"""Where a result came from: the package version and the git commit of its sources."""

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
