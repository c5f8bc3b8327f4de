"""End to end on digits_lt with tiny settings: dscl-train / dscl-eval, exact resume, crash
safety of checkpoints, non-finite loss, and a 2-process CPU DDP run gathering the queue."""

import json
import logging
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import (
    CONFIG,
    ROOT,
    TINY,
    Crash,
    CrashAt,
    RecordSteps,
    run_two_process_ddp,
    state_copy,
    tiny,
)

import dscl_plugin
from dscl_plugin.backbones.weights import export_backbone, load_backbone_weights
from dscl_plugin.cli import eval_main, main, train_main
from dscl_plugin.errors import CheckpointError, ConfigError, NonFiniteLossError
from dscl_plugin.methods import build_method
from dscl_plugin.models import DSCLModel, build_backbone
from dscl_plugin.runs.folder import saved_config
from dscl_plugin.runs.stage1 import train
from dscl_plugin.safe_io import load_file
from dscl_plugin.training.checkpoint_io import AtomicCheckpointIO


@pytest.mark.slow
def test_train_then_eval(tmp_path, capsys, caplog, recwarn):
    caplog.set_level(logging.INFO, logger="pytorch_lightning")  # whatever earlier tests set
    # Lightning stops propagating to the root logger when it is imported before any root
    # handler exists (import order decides), so listen on its own logger too
    lightning_logger = logging.getLogger("pytorch_lightning")
    lightning_logger.addHandler(caplog.handler)
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        assert train_main(["--config", CONFIG, *TINY, f"output_dir={out}"]) == 0
    finally:
        lightning_logger.removeHandler(caplog.handler)
    assert torch.get_num_threads() == threads  # trainer.num_threads applies to the run only
    captured = capsys.readouterr()
    printed = captured.out
    assert "linear_probe/overall" in printed and "knn/precision_at_1" in printed
    assert not [r for r in caplog.records if "Tip" in r.getMessage()]  # Lightning's adverts
    assert "GPU available" in caplog.text  # (its other information stays)
    assert not [w for w in recwarn if "ambiguous" in str(w.message)]  # batch_size is passed
    assert not [w for w in recwarn if "LeafSpec" in str(w.message)]  # filtered, narrowly
    metrics = json.loads((out / "metrics.json").read_text())
    probe = metrics["linear_probe"]
    assert set(probe) == {"overall", "many", "medium", "few"}
    # the trained features carry the classes: kNN far above chance (10 classes)
    assert metrics["knn"]["precision_at_1"] > 0.5
    assert len(metrics["per_class_accuracy"]) == 10 and metrics["train_class_counts"][0] == 144
    assert metrics["checkpoint"] == str((out / "backbone.pt").resolve())
    assert metrics["config"]["model"]["queue_size"] == 64
    assert metrics["package"]["version"] == dscl_plugin.__version__
    assert (out / "per_class_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "logs").iterdir()) == [
        "hparams.yaml",
        "metrics.csv",
    ]
    log = (out / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"loss_step", "loss_dscl", "loss_pbsd", "queue_fill", "lr"} <= set(log)
    assert {"monitor/knn_overall", "monitor/knn_few"} <= set(log)  # the preset monitors
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert printed.splitlines()[-1].endswith(f"per_class_accuracy.png, {out / 'curves.png'}")
    assert metrics["class_names"] == [str(c) for c in range(10)]
    checkpoint = load_file(out / "checkpoints" / "last.ckpt")
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (1, 6)
    assert "rng_states" in checkpoint
    backbone, _ = build_backbone("small_cnn")
    backbone.load_state_dict(torch.load(out / "backbone.pt", weights_only=True))  # exact keys

    # stage 2 alone from the training checkpoint reproduces the metrics, next to that
    # checkpoint: the run's own metrics.json is not overwritten
    own = (out / "metrics.json").read_text()
    last = out / "checkpoints" / "last.ckpt"
    shown = ["trainer.progress_bar=true"]  # stage 2 progress goes with the progress bar
    assert (
        eval_main(
            [
                "--config",
                CONFIG,
                *TINY,
                *shown,
                f"output_dir={out}",
                "--checkpoint",
                str(last),
            ]
        )
        == 0
    )
    scored = json.loads((out / "checkpoints" / "last_eval" / "metrics.json").read_text())
    assert scored["linear_probe"] == probe and scored["checkpoint"] == str(last.resolve())
    assert (out / "checkpoints" / "last_eval" / "per_class_accuracy.png").is_file()
    assert (out / "metrics.json").read_text() == own
    err = capsys.readouterr().err
    assert "stage 2: train features" in err and "stage 2: linear probe" in err
    assert "stage 2: kNN retrieval" in err

    # a fresh run never silently overwrites an existing one; a resume keeps the settings
    assert main(["train", "--config", CONFIG, *TINY, f"output_dir={out}", "--stage", "1"]) == 1
    assert "pass --resume" in capsys.readouterr().err
    args = ["--config", CONFIG, *TINY, f"output_dir={out}"]
    assert train_main([*args, "--resume", "optim.lr=0.2"]) == 2
    assert "optim.lr: 0.1 -> 0.2" in capsys.readouterr().err

    # re-running a finished run (as the examples do) only re-evaluates it
    stamp = last.stat().st_mtime_ns
    assert train_main(args, resume_existing=True) == 0
    assert "training finished; re-evaluating" in capsys.readouterr().err
    assert last.stat().st_mtime_ns == stamp
    assert json.loads((out / "metrics.json").read_text())["linear_probe"] == probe

    # model.init_from starts a new run from the exported backbone
    module = build_method(tiny(tmp_path, "init", f"model.init_from={out / 'backbone.pt'}"))
    exported = torch.load(out / "backbone.pt", weights_only=True)
    for backbone in (module.backbone, module.model.backbone_momentum):
        assert all(torch.equal(v, exported[k]) for k, v in backbone.state_dict().items())


@pytest.mark.slow
def test_augmented_probe_protocol_keeps_bn_frozen(tmp_path, monkeypatch):
    """probe.protocol=augmented: class-balanced loader of augmented training images,
    the backbone in eval mode (BN running statistics unchanged)."""
    import dscl_plugin.runs.stage2 as run_evaluation
    from dscl_plugin.data.samplers import ClassBalancedSampler
    from dscl_plugin.runs.stage2 import evaluate

    config = tiny(tmp_path, "augmented", "probe.protocol=augmented", "probe.batch_size=64")
    loaders, real = [], run_evaluation.augmented_linear_probe

    def spy(embed_fn, loader, *args, **kwargs):
        loaders.append(loader)
        return real(embed_fn, loader, *args, **kwargs)

    monkeypatch.setattr(run_evaluation, "augmented_linear_probe", spy)
    module = build_method(config)
    before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    metrics = evaluate(config, module)
    (loader,) = loaders
    assert isinstance(loader.sampler, ClassBalancedSampler) and loader.batch_size == 64
    crop = loader.dataset.transform.transforms[0]
    assert type(crop).__name__ == "RandomResizedCrop" and list(crop.scale) == [0.4, 1.0]
    after = module.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert 0.0 <= metrics["linear_probe"]["overall"] <= 1.0


def test_resnet_export_loads_into_torchvision(tmp_path):
    backbone, _ = build_backbone("resnet18")
    export_backbone(backbone, "resnet18", tmp_path / "backbone.pt")
    state = torch.load(tmp_path / "backbone.pt", weights_only=True)
    resnet = torchvision.models.resnet18()
    missing, unexpected = resnet.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    assert torch.equal(resnet.layer4[1].conv2.weight, backbone[7][1].conv2.weight)
    fresh, _ = build_backbone("resnet18")
    torch.save(resnet.state_dict(), tmp_path / "torchvision.pt")  # fc.* is ignored
    load_backbone_weights(fresh, "resnet18", tmp_path / "torchvision.pt")
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in fresh.state_dict().items())
    small, _ = build_backbone("small_cnn")
    with pytest.raises(CheckpointError, match="torchvision.pt.*do not fit backbone 'small_cnn'"):
        load_backbone_weights(small, "small_cnn", tmp_path / "torchvision.pt")


def test_cli_reports_config_errors(capsys):
    assert train_main(["--config", CONFIG, "model.queue=3"]) == 2
    err = capsys.readouterr().err
    assert "'model.queue'" in err and "Did you mean 'model.queue_size'?" in err


EXAMPLE = ROOT / "examples" / "train_digits_lt.py"


# Runs the example as ``python EXAMPLE args`` once per argument list, all in one interpreter
# (one torch import), with file descriptors 1 and 2 sent to a file per run so that every
# byte written to stdout or stderr is seen; prints [{returncode, stdout, stderr}, ...].
EXAMPLE_RUNS = textwrap.dedent(
    """
    import json, os, runpy, sys, tempfile

    def run(argv):
        files = [tempfile.TemporaryFile() for _ in (1, 2)]
        saved = [os.dup(fd) for fd in (1, 2)]
        for fd, file in zip((1, 2), files):
            os.dup2(file.fileno(), fd)
        sys.argv = argv
        try:
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
        for file in files:
            file.seek(0)
        stdout, stderr = (file.read().decode() for file in files)
        return dict(returncode=code, stdout=stdout, stderr=stderr)

    example, runs = sys.argv[1], json.loads(sys.argv[2])
    results = [run([example, *args]) for args in runs]
    print(json.dumps(results))
    """
)


@pytest.mark.slow
def test_example_behaves_like_the_cli(tmp_path):
    """--help works; a config error is one line on stderr with exit code 2."""
    runs = [["--help"], ["model.queue=3"]]
    result = subprocess.run(
        [sys.executable, "-c", EXAMPLE_RUNS, str(EXAMPLE), json.dumps(runs)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr[-2000:]
    helped, failed = (SimpleNamespace(**run) for run in json.loads(result.stdout))
    assert helped.returncode == 0 and "key.path=value" in helped.stdout
    assert "dscl_digits_lt" in helped.stdout  # the example's own default config
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.startswith(
        f"python {EXAMPLE.as_posix()}: config error: Unknown config key"
    )


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(tmp_path):
    short = "trainer.limit_train_batches=2"
    straight = state_copy(train(tiny(tmp_path, "straight", short)))
    config = tiny(tmp_path, "resumed", short)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, callbacks=[Crash()])  # epoch 0 done and saved, crash inside epoch 1
    assert not (Path(config.output_dir) / "backbone.pt").exists()
    resumed = state_copy(train(config, resume=True))
    logs = Path(config.output_dir) / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        "hparams.yaml",
        "metrics.csv",
    ]  # one log
    steps = [row.split(",") for row in (logs / "metrics.csv").read_text().splitlines()]
    column = steps[0].index("step")
    assert {int(row[column]) for row in steps[1:]} >= {
        0,
        3,
    }  # before the crash and after resume
    assert straight.keys() == resumed.keys()
    different = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not different, different
    assert int(resumed["model.memory_bank.num_filled"]) == 4 * 16


@pytest.mark.slow
def test_resuming_an_unfinished_run_reads_its_settings_once(tmp_path, monkeypatch):
    import dscl_plugin.runs.folder as training
    from dscl_plugin.runs.pipeline import run

    config = tiny(tmp_path, "once", "trainer.limit_train_batches=2")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, callbacks=[Crash()])
    read, reads = training.saved_config, []
    monkeypatch.setattr(training, "saved_config", lambda path: reads.append(path) or read(path))
    assert run(config, stage=1, resume=True) is None
    assert reads == [Path(config.output_dir) / "checkpoints" / "last.ckpt"]


@pytest.mark.slow
def test_mid_epoch_checkpoint_resumes_at_the_right_step(tmp_path):
    every_step = ["trainer.checkpoint_every_n_steps=1", "trainer.limit_train_batches=4"]
    straight = RecordSteps()
    train(tiny(tmp_path, "straight", *every_step), callbacks=[straight])
    config = tiny(tmp_path, "resumed", *every_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, callbacks=[CrashAt(epoch=0, batch_idx=2)])  # 2 steps done and saved
    checkpoint = load_file(Path(config.output_dir) / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2 and checkpoint["loader_position"]["batches_done"] == 2
    resumed = RecordSteps()
    module = train(config, resume=True, callbacks=[resumed])
    # continues at step 2, batch 2 of epoch 0, with the images the straight run saw next
    # (same order, labels identical) and the same learning rates
    assert [s[:3] for s in resumed.steps] == [s[:3] for s in straight.steps[2:]]
    for got, want in zip(resumed.steps, straight.steps[2:]):
        assert got[3] == pytest.approx(want[3])
    assert module.global_step == 8
    assert int(module.model.memory_bank.num_filled) == 64  # 8 steps of 16 keys, no replay


@pytest.mark.slow
def test_resume_with_more_epochs_extends_a_finished_run(tmp_path):
    short = "trainer.limit_train_batches=2"
    config = tiny(tmp_path, "extend", short)
    train(config)  # 2 epochs, 4 steps: the cosine has reached 0
    with pytest.raises(ConfigError, match=r"trainer.epochs: 2 -> 1 \(may only grow"):
        train(tiny(tmp_path, "extend", short, "trainer.epochs=1"), resume=True)
    record = RecordSteps()
    longer = tiny(tmp_path, "extend", short, "trainer.epochs=4")
    module = train(longer, resume=True, callbacks=[record])
    assert [s[0] for s in record.steps] == [4, 5, 6, 7]
    scheduler = module.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.max_epochs == 8  # the schedule of the longer run, not the saved one
    # the first extension step already uses the longer schedule (8 steps, 2 of warm-up),
    # not the finished run's final lr of 0
    from lightly.utils.scheduler import cosine_warmup_schedule

    expected = [0.1 * cosine_warmup_schedule(step, 8, 1.0, 0.0, 2, 0.0) for step in range(4, 8)]
    assert [s[3] for s in record.steps] == pytest.approx(expected)
    assert record.steps[0][3] > 0.01


def test_corrupt_checkpoint_names_the_file(tmp_path, capsys):
    config = tiny(tmp_path, "corrupt")
    last = Path(config.output_dir) / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(CheckpointError, match="Cannot read checkpoint .*last.ckpt"):
        train(config, resume=True)
    args = ["--config", CONFIG, *TINY, f"output_dir={config.output_dir}"]
    assert train_main([*args, "--resume"]) == 1
    err = capsys.readouterr().err
    assert str(last) in err and "--resume PATH" in err
    assert eval_main([*args, "--checkpoint", str(last)]) == 1
    err = capsys.readouterr().err  # eval's advice, not resume's
    assert str(last) in err and "dscl-eval scores a backbone.pt" in err and "--resume" not in err
    assert train_main([*args, "--resume", str(tmp_path / "missing.ckpt")]) == 1
    assert "not found" in capsys.readouterr().err


def test_corrupt_checkpoint_points_to_the_previous_one(tmp_path):
    io = AtomicCheckpointIO(keep_previous=True)
    last = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(1)}}, last)
    io.save_checkpoint({"state_dict": {"w": torch.full((1,), 2.0)}}, last)
    previous = tmp_path / "last.prev.ckpt"
    assert io.load_checkpoint(previous)["state_dict"]["w"].item() == 1.0
    last.write_bytes(last.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError) as info:
        saved_config(last)  # the resume check reads the checkpoint first
    assert f"--resume {previous}" in str(info.value)
    with pytest.raises(CheckpointError) as info:
        load_file(last)  # the file IO names the file and why, and gives no CLI advice
    assert str(last) in str(info.value) and "--resume" not in str(info.value)


def test_unsafe_checkpoint_message_gives_no_weights_only_false_advice(tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "extra": Crash()}, path)  # an arbitrary Python object
    with pytest.raises(CheckpointError) as info:
        saved_config(path)
    message = str(info.value)
    assert "weights_only" not in message and "arbitrary code" in message
    assert str(path) in message and "--resume PATH" in message


@pytest.mark.slow
def test_ctrl_c_prints_how_to_resume(tmp_path, monkeypatch, capsys):
    forward, calls = DSCLModel.forward, []

    def interrupt_on_fifth_step(self, *args):
        calls.append(1)
        if len(calls) == 5:  # epoch 1, after epoch 0's checkpoint
            raise KeyboardInterrupt
        return forward(self, *args)

    monkeypatch.setattr(DSCLModel, "forward", interrupt_on_fifth_step)
    handler = signal.getsignal(signal.SIGINT)
    args = ["--config", CONFIG, *TINY, f"output_dir={tmp_path / 'run'}"]
    assert train_main(args) == 130
    assert signal.getsignal(signal.SIGINT) is handler  # restored after Lightning's shutdown
    err = capsys.readouterr().err
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert f"the last complete checkpoint is '{last}'" in err
    assert err.rstrip().endswith(shlex.join(["dscl-train", *args, "--resume"]))
    monkeypatch.setattr(DSCLModel, "forward", forward)
    assert train_main([*args, "--resume"]) == 0  # and that command does resume


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)

    def crash_mid_write(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    forward, calls = DSCLModel.forward, []

    def nan_on_fifth_step(self, *args):
        out = forward(self, *args)
        calls.append(1)
        if len(calls) == 5:  # epoch 1, batch 1, global step 4
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(DSCLModel, "forward", nan_on_fifth_step)
    config = tiny(tmp_path, "nan")
    with pytest.raises(NonFiniteLossError, match=r"at global step 4 \(epoch 1, batch 1\)"):
        train(config)
    checkpoint = load_file(Path(config.output_dir) / "checkpoints" / "last.ckpt")
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 3
    weights = [v for v in checkpoint["state_dict"].values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in weights)
    assert not (Path(config.output_dir) / "backbone.pt").exists()


@pytest.mark.slow
def test_ddp_two_cpu_processes_gather_keys_with_labels(tmp_path):
    rank0, rank1 = run_two_process_ddp(tmp_path)
    assert rank0["world_size"] == rank1["world_size"] == 2
    per_device, steps = 8, 2
    assert rank0["bank"].shape == (2 * per_device * steps, 16)
    assert torch.equal(rank0["bank"], rank1["bank"])  # both queues identical
    assert torch.equal(rank0["bank_labels"], rank1["bank_labels"])

    # each step enqueues [rank 0's keys, rank 1's keys], every key with its own label
    def interleave(name):
        pairs = zip(rank0[name].split(per_device), rank1[name].split(per_device))
        return torch.cat([chunk for pair in pairs for chunk in pair])

    expected_keys, expected_labels = interleave("keys"), interleave("labels")
    assert torch.equal(rank0["bank_labels"], expected_labels)
    torch.testing.assert_close(rank0["bank"], F.normalize(expected_keys, dim=1))
    assert not torch.equal(rank0["labels"], rank1["labels"])  # the ranks saw different images
    out = tmp_path / "ddp"
    assert (out / "backbone.pt").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    log = (out / "logs" / "metrics.csv").read_text().splitlines()
    knn = log[0].split(",").index("monitor/knn_overall")
    assert len([row for row in log[1:] if row.split(",")[knn]]) == 1  # rank 0, once an epoch
    assert (out / "curves.png").is_file()
