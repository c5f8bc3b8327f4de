"""runs.jsonl and the run claims: a torn line is skipped with one note, a write replaces
the file whole (a failed one leaves it as it was), writers from several processes lose
no record, and a claim is held by one process at a time and freed when it dies."""

import errno
import json
import multiprocessing
import os

import pytest
from helpers import lock_holder

from dscl_plugin.runs import records
from dscl_plugin.runs.records import CLAIM_FILE, append_record, claim, read_records

TORN = '{"method": "dscl", "seed": 1, "overall": 0.6'  # a record cut off mid-write


def test_a_torn_line_is_skipped_with_one_note_and_the_next_write_drops_it(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"method": "supcon", "seed": 0}\n{"method": "dscl", "seed": 0}\n' + TORN)
    notes = []
    assert read_records(path, note=notes.append) == [
        {"method": "supcon", "seed": 0},
        {"method": "dscl", "seed": 0},
    ]
    assert notes == [f"{path}: line 3 is not a complete JSON record (cut off mid-write?): ignored"]
    with pytest.warns(UserWarning, match="line 3 is not a complete JSON record"):
        read_records(path)  # told as a warning without a note
    append_record(path, {"method": "dscl", "seed": 1})
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines][-1] == {"method": "dscl", "seed": 1}
    assert len(lines) == 3  # the torn line is gone, the others kept as they were


def test_a_later_record_of_the_same_key_wins(tmp_path):
    path = tmp_path / "runs.jsonl"
    for overall in (0.5, 0.7):
        append_record(path, {"method": "dscl", "seed": 0, "overall": overall})
    assert read_records(path) == [{"method": "dscl", "seed": 0, "overall": 0.7}]
    assert read_records(tmp_path / "missing.jsonl") == []


def test_a_failed_write_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "runs.jsonl"
    append_record(path, {"method": "supcon", "seed": 0})
    before = path.read_bytes()

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records.os, "replace", full_disk)
    with pytest.raises(OSError) as error:
        append_record(path, {"method": "dscl", "seed": 0})
    assert error.value.filename == str(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.jsonl"]  # no temporary left


def _append_many(path, writer, count):
    for i in range(count):
        append_record(path, {"method": writer, "seed": i})


def test_writers_in_several_processes_lose_no_record(tmp_path):
    path = tmp_path / "runs.jsonl"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_many, args=(path, w, 50)) for w in ("a", "b", "c")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert [writer.exitcode for writer in writers] == [0, 0, 0]
    found = sorted((r["method"], r["seed"]) for r in read_records(path, note=pytest.fail))
    assert found == sorted((w, i) for w in ("a", "b", "c") for i in range(50))


def test_a_claim_is_held_by_one_process_and_freed_when_it_dies(tmp_path):
    run = tmp_path / "dscl" / "seed0"
    with claim(run) as held:
        assert held
        with claim(run) as again:  # another open file: as another process sees it
            assert not again
    with claim(run) as held:
        assert held  # let go at the end of the block
    holder = lock_holder(run / CLAIM_FILE)
    try:
        assert holder.stdout.readline() == "held\n"
        with claim(run) as held:
            assert not held
    finally:
        holder.kill()  # as a crash: no clean-up of its own
        holder.wait()
    with claim(run, wait=True) as held:
        assert held
    assert os.listdir(run) == [CLAIM_FILE]
