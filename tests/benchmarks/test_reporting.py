"""benchmarks/reporting.py: the Markdown table and the recorded command."""

from benchmarks import reporting


def test_markdown_table():
    assert reporting.markdown_table([{"a": 1, "b": "x"}]) == "| a | b |\n|---|---|\n| 1 | x |"


def test_provenance_records_the_module_command_with_its_arguments_quoted():
    settings = reporting.provenance("python -m benchmarks.train_step", ["--json", "a b.json"])
    assert settings["command"] == "python -m benchmarks.train_step --json 'a b.json'"
    assert {"commit", "modified", "machine", "load_average", "torch", "started"} <= set(settings)
