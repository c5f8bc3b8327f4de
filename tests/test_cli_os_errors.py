"""OS errors while a run writes (disk full, permission denied, read-only disk): one line
naming the path and the fix, exit 1, the last complete checkpoint kept, and ``--resume``
finishing the run once the fix is made."""

import errno
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CONFIG, ROOT, TINY

from dscl_plugin import safe_io
from dscl_plugin.cli import train_main
from dscl_plugin.safe_io import atomic_save, load_file, writing

NO_SPACE = os.strerror(errno.ENOSPC)


def test_writing_names_the_file_an_os_error_does_not_name(tmp_path):
    target, temporary = tmp_path / "a.ckpt", tmp_path / ".a.ckpt.tmp"
    with pytest.raises(OSError) as error, writing(target):
        raise OSError(errno.ENOSPC, NO_SPACE)  # what a full disk raises on write
    assert (error.value.errno, error.value.filename) == (errno.ENOSPC, str(target))
    with pytest.raises(PermissionError) as denied, writing(target, temporary):
        raise PermissionError(errno.EACCES, "Permission denied", str(temporary))
    assert denied.value.filename == str(target)  # the file meant, not its temporary
    with pytest.raises(OSError) as other, writing(target):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))
    assert other.value.filename == str(tmp_path)  # a named path stays


def test_a_full_disk_mid_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"step": 1}, path)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, NO_SPACE)

    monkeypatch.setattr(safe_io.os, "fsync", disk_full)
    with pytest.raises(OSError) as error:
        atomic_save({"step": 2}, path, keep_previous=True)
    assert (error.value.errno, error.value.filename) == (errno.ENOSPC, str(path))
    monkeypatch.undo()
    assert load_file(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def resume_command(err: str) -> list[str]:
    """The arguments of the command the error line gives."""
    return shlex.split(err.rsplit(" with: dscl-train ", 1)[1])


@pytest.mark.slow
def test_disk_full_mid_run_is_one_line_and_resume_finishes(tmp_path, monkeypatch, capsys):
    fsync, calls = os.fsync, []

    def full_at_second_checkpoint(fd):
        calls.append(fd)
        if len(calls) == 2:  # epoch 1's checkpoint; epoch 0's is complete
            raise OSError(errno.ENOSPC, NO_SPACE)
        fsync(fd)

    monkeypatch.setattr(safe_io.os, "fsync", full_at_second_checkpoint)
    run = tmp_path / "run"
    args = ["--config", CONFIG, *TINY, f"output_dir={run}"]
    assert train_main(args) == 1
    err = capsys.readouterr().err.strip()
    last = run / "checkpoints" / "last.ckpt"
    assert err == (
        f"dscl-train: error: {NO_SPACE}: '{last}'. Free space on its disk, then resume from the "
        f"last complete checkpoint '{last}' with: {shlex.join(['dscl-train', *args, '--resume'])}"
    )
    assert load_file(last)["epoch"] == 0 and not (run / "backbone.pt").exists()
    monkeypatch.undo()  # space freed
    assert train_main(resume_command(err)) == 0
    assert load_file(last)["epoch"] == 1 and (run / "metrics.json").is_file()


@pytest.mark.slow
def test_a_folder_that_cannot_be_written_is_named(tmp_path, monkeypatch, capsys):
    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(Path, "write_text", denied)
    args = ["--config", CONFIG, *TINY, f"output_dir={tmp_path / 'run'}"]
    assert train_main(args) == 1
    assert capsys.readouterr().err == (
        f"dscl-train: error: Permission denied: '{tmp_path / 'run' / 'config.yaml'}'. Make it "
        "writable, or set output_dir= to a folder you can write, then run the same command "
        f"again: {shlex.join(['dscl-train', *args])}\n"
    )


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 3.7 MB (two tiny checkpoints and some logs, not a third checkpoint)
    mounted at ``tmp_path / "disk"``; ``remount(options)`` changes it. Skipped where
    mounting is not allowed (not root, or no CAP_SYS_ADMIN)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3700k", "tmpfs", str(disk)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(disk)], check=True)

    yield disk, remount
    subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_a_real_full_disk_then_resume_on_a_tmpfs(small_disk, tmp_path):
    disk, remount = small_disk
    run = disk / "run"
    args = [*TINY, "trainer.epochs=3", f"output_dir={run}"]  # a third checkpoint fills it

    def dscl_train(*extra):
        command = [sys.executable, "-m", "dscl_plugin.cli", "--config", "dscl_digits_lt"]
        return subprocess.run(
            [*command, *args, *extra],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    full = dscl_train()
    assert full.returncode == 1, full.stderr[-2000:]
    err = full.stderr.strip().splitlines()[-1]
    assert (
        err.startswith(f"dscl-train: error: {NO_SPACE}: '{run}") and "Traceback" not in full.stderr
    )
    assert "Free space on its disk, then resume from the last complete checkpoint" in err
    last = run / "checkpoints" / "last.ckpt"
    assert load_file(last)["epoch"] == 1  # the third save failed, the second is intact
    remount("size=64m")  # space freed
    resumed = dscl_train("--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_file(last)["epoch"] == 2 and (run / "metrics.json").is_file()
    remount("ro")
    read_only = dscl_train("output_dir=" + str(disk / "other"))
    assert read_only.returncode == 1
    assert (
        read_only.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"dscl-train: error: Read-only file system: '{disk / 'other'}'. Set output_dir= to a "
            "folder on a writable disk, then run the same command again: "
        )
    )
