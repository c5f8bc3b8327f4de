"""How a config fits its training set: the queue, the steps per epoch, empty shot groups
and an unused ``val/`` split, each one line naming the key and the value to set; and the
log interval of a small data set."""

from types import SimpleNamespace

import pytest
from helpers import CONFIG, LONG_TAIL, image_folder

from dscl_plugin.training.config import load_config
from dscl_plugin.training.data_fit import (
    batch_limit,
    queue_limit,
    shot_group_note,
    training_notes,
)
from dscl_plugin.training.trainer import log_interval


def config(*overrides):
    return load_config(CONFIG, list(overrides))


def test_limits_are_powers_of_two_within_the_data():
    assert [queue_limit(n) for n in (1, 837, 1024, 1025)] == [1, 512, 1024, 1024]
    assert [batch_limit(n) for n in (3, 837, 1024)] == [1, 128, 256]  # 4 steps an epoch


def test_a_queue_or_batch_too_large_for_the_data_is_one_line_each():
    counts = [300, 100, 37]  # 437 images
    assert training_notes(config("model.queue_size=437", "trainer.batch_size=64"), counts) == []
    assert training_notes(config("model.queue_size=4096", "trainer.batch_size=128"), counts) == [
        "model.queue_size 4096 is larger than the training set (437 images), so the queue "
        "holds each image several times, from older encoders; set model.queue_size=256 or less",
        "trainer.batch_size 128 leaves 3 step(s) per epoch on 437 training images (53 left "
        "out of each epoch); set trainer.batch_size=64 or less",
    ]
    no_queue = training_notes(
        config("model.queue_size=4096", "trainer.batch_size=64"), counts, False
    )
    assert no_queue == []  # a batch method: its queue_size is unused
    # larger than the training set: stage 1's error, not a note
    assert training_notes(config("model.queue_size=64", "trainer.batch_size=512"), counts) == []


@pytest.mark.parametrize(
    "thresholds, note",
    [
        (("eval.many_threshold=100", "eval.few_threshold=20"), None),
        (
            ("eval.many_threshold=1000", "eval.few_threshold=500"),
            "shot groups many and medium will be empty: no class has > 1000 training images; "
            "no class has 500 ... 1000 training images (class sizes 300, 194, 125, 81, 52, 34, "
            "22, 14, 9, 6); set eval.many_threshold below 300 and eval.few_threshold and "
            "eval.many_threshold so that a class size lies between them",
        ),
        (
            ("eval.many_threshold=100", "eval.few_threshold=5"),
            "shot group few will be empty: no class has < 5 training images (class sizes 300, "
            "194, 125, 81, 52, 34, 22, 14, 9, 6); set eval.few_threshold above 6",
        ),
    ],
)
def test_an_empty_shot_group_is_named_with_the_class_sizes_and_the_keys(thresholds, note):
    assert shot_group_note(config(*thresholds), LONG_TAIL[::-1]) == note  # sizes sorted


def test_many_class_sizes_are_shortened():
    note = shot_group_note(config("eval.many_threshold=5000"), list(range(1, 101)))
    assert "(class sizes 100, 99, 98, 97, 96, 95, 94, 93, ..., 8, 7, 6, 5, 4, 3, 2, 1)" in note


def test_only_an_image_folder_with_val_gets_the_val_note(tmp_path):
    folder = image_folder(tmp_path, [4, 4], test=1, val=1)
    image = config("data.name=image_folder", f"data.root={folder}", "model.queue_size=8")
    assert training_notes(image, [4, 4]) == [  # batch 64 > 8 images: stage 1's error
        f"'{folder}/val' (2 files) is not used: stage 1 trains on train/, stage 2 fits its "
        "probe on train/ and scores test/ (no model selection)"
    ]
    digits = config(f"data.root={folder}", "model.queue_size=8", "trainer.batch_size=2")
    assert training_notes(digits, [4, 4]) == []


def test_the_log_interval_is_at_most_the_steps_of_an_epoch():
    data = SimpleNamespace(dataset=range(100), batch_size=16)  # 6 steps
    assert log_interval(config("trainer.log_every_n_steps=50"), data) == 6
    assert log_interval(config("trainer.log_every_n_steps=5"), data) == 5
    assert log_interval(config("trainer.limit_train_batches=2"), data) == 2
    assert log_interval(config("trainer.devices=2", "trainer.accelerator=cpu"), data) == 3
    assert log_interval(config(), SimpleNamespace(dataset=range(3), batch_size=16)) == 1
