"""Where a result came from: the package installed inside another git repository (a
virtual environment in a project) names its version, not that repository's commit."""

import subprocess

from dscl_plugin import __version__
from dscl_plugin.runs.provenance import package_stamp


def test_a_commit_is_named_only_where_git_tracks_the_package(tmp_path):
    project = tmp_path / "project"  # the user's repository, the package installed in it
    source = project / ".venv" / "dscl_plugin" / "runs" / "provenance.py"
    source.parent.mkdir(parents=True)
    source.write_text("# installed\n")
    git = ["git", "-c", "user.name=u", "-c", "user.email=u@x", "-C", str(project)]

    def call(*args):
        return subprocess.run([*git, *args], check=True, capture_output=True, text=True)

    call("init", "-q")
    call("commit", "-q", "--allow-empty", "-m", "theirs")
    assert package_stamp(source) == {"version": __version__, "git_commit": None}
    call("add", "-f", str(source))
    call("commit", "-q", "-m", "tracked")
    head = call("rev-parse", "HEAD").stdout.strip()
    assert package_stamp(source) == {"version": __version__, "git_commit": head}
    assert package_stamp(tmp_path / "elsewhere" / "x.py")["git_commit"] is None  # no checkout
