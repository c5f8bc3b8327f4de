"""A user's image folder end to end: ``dscl-train --data DIR`` and the config of
docs/compare.md train on every image of a long-tailed folder (300 ... 6 per class) with
shot groups that hold classes; a config that does not fit the data says so at the start,
one line per key, and an empty shot group is ``empty`` with its reason in metrics.json and
in the printed table."""

import json

import pytest
from helpers import LONG_TAIL, ROOT, image_folder

from dscl_plugin.cli import train_main

FAST = [  # the recipe as chosen, made short
    "trainer.epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.num_workers=0",
    "trainer.progress_bar=false",
    "probe.epochs=2",
    "probe.milestones=[1]",
    "monitor.every=0",
]


@pytest.fixture(scope="module")
def long_tailed_folder(tmp_path_factory):
    """10 classes of 300 ... 6 grey 8 px training images, 5 test images each."""
    return image_folder(tmp_path_factory.mktemp("data") / "my_images", LONG_TAIL, test=5)


def _run(capsys, *args):
    code = train_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


@pytest.mark.slow
def test_data_trains_on_every_image_with_groups_that_hold_classes(
    long_tailed_folder, tmp_path, capsys, recwarn
):
    out_dir = tmp_path / "run"
    code, out, err = _run(capsys, "--data", str(long_tailed_folder), *FAST, f"output_dir={out_dir}")
    assert code == 0, err
    notes = [line for line in err if line.startswith("dscl-train: note:")]
    assert len(notes) == 1 and "preset dscl_fashion_mnist_lt (grey, <= 32 px)" in notes[0]
    assert not [w for w in recwarn if "logging interval" in str(w.message)]  # 2 steps: logged
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["train_class_counts"] == LONG_TAIL  # every image, as in the folder
    assert metrics["shot_thresholds"] == {"many": 100, "few": 20}
    assert metrics["empty_groups"] == {}
    assert all(metrics["linear_probe"][g] is not None for g in ("many", "medium", "few"))
    assert metrics["config"]["model"]["queue_size"] == 512 and "empty" not in out


@pytest.mark.slow
def test_the_config_of_docs_compare_keeps_every_image(
    long_tailed_folder, tmp_path, capsys, monkeypatch
):
    page = (ROOT / "docs" / "compare.md").read_text()
    config = page.split("```yaml\n")[1].split("```")[0]
    assert "base: dscl_fashion_mnist_lt" in config and "root: my_images" in config
    monkeypatch.chdir(long_tailed_folder.parent)
    (long_tailed_folder.parent / "my_images.yaml").write_text(config)
    out_dir = tmp_path / "run"
    code, _, err = _run(capsys, "--config", "my_images.yaml", *FAST, f"output_dir={out_dir}")
    assert code == 0, err
    assert any("so the fashion_mnist_lt settings of 'dscl_fashion_mnist_lt'" in e for e in err)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["train_class_counts"] == LONG_TAIL and metrics["empty_groups"] == {}
    assert all(metrics["linear_probe"][g] is not None for g in ("many", "medium", "few"))


def test_a_config_that_does_not_fit_the_data_says_so_at_the_start(tmp_path, capsys):
    folder = image_folder(tmp_path / "small", [40, 30, 20, 12, 6], test=2)
    out_dir = tmp_path / "run"
    too_large = ["eval.many_threshold=1000", "model.queue_size=4096", "trainer.batch_size=64"]
    code, out, err = _run(capsys, "--data", str(folder), *too_large, *FAST, f"output_dir={out_dir}")
    assert code == 0, err
    notes = [line.removeprefix("dscl-train: note: ") for line in err if " note: " in line]
    assert notes[1:] == [
        "model.queue_size 4096 is larger than the training set (108 images), so the queue "
        "holds each image several times, from older encoders; set model.queue_size=64 or less",
        "trainer.batch_size 64 leaves 1 step(s) per epoch on 108 training images (44 left out "
        "of each epoch); set trainer.batch_size=16 or less",
        "shot group many will be empty: no class has > 1000 training images (class sizes 40, "
        "30, 20, 12, 6); set eval.many_threshold below 40",
    ]
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["linear_probe"]["many"] is None
    assert metrics["empty_groups"] == {"many": "no class has > 1000 training images"}
    (row,) = [line for line in out.splitlines() if line.startswith("linear_probe/many")]
    assert row.split(None, 1)[1] == "empty (no class has > 1000 training images)"
