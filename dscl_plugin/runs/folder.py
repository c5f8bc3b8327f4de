"""A run's folder (``output_dir``): where each stage reads and writes, the settings saved
with a run, and the checks of a config against them.

``output_dir/`` holds ``config.yaml`` (the merged config), ``checkpoints/last.ckpt`` (and
``last.prev.ckpt``), ``logs/metrics.csv``, ``backbone.pt`` (and a method's own classifier,
``classifier.pt``) and ``curves.png`` once stage 1 has finished and the stage-2 results
(``metrics.json``, ``per_class_accuracy.png``). A checkpoint scored from elsewhere gets
its results in ``<checkpoint stem>_eval/`` beside it.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dscl_plugin.errors import CheckpointError, ConfigError
from dscl_plugin.safe_io import PathLike, load_file, previous_path
from dscl_plugin.training.config import to_dict
from dscl_plugin.training.schema import Config

# how a stage-1 run starts: None/False fresh, True/"last" from last.ckpt, or a checkpoint
Resume = None | bool | str | Path

# settings a resumed run must share with its checkpoint (others, e.g. num_workers, may
# change; trainer.epochs may grow, which extends the run), and the method's options
RESUME_KEYS = ("method", "data", "model", "optim", "seed", "trainer.batch_size")
RESUME_FREE = ("data.root", "data.download")
# settings that make a training checkpoint the model it is (model.init_from only started
# it), and the method's options
MODEL_KEYS = ("method", "model")


def method_options_key(config: Config) -> str:
    """The config key of the options of the run's method (other methods' do not count)."""
    return f"method_options.{config.method}"


# the files of a run, relative to its folder
LAYOUT = {
    "config_file": "config.yaml",
    "checkpoints": "checkpoints",
    "last_checkpoint": "checkpoints/last.ckpt",
    "logs": "logs",
    "backbone": "backbone.pt",
    "curves": "curves.png",
    "classifier": "classifier.pt",
}


@dataclass(frozen=True)
class RunFolder:
    """The files of the run in ``root`` (a config's ``output_dir``), as :data:`LAYOUT`
    places them: ``config_file``, ``checkpoints`` (the folder), ``last_checkpoint``,
    ``logs`` (the folder of ``metrics.csv``), ``backbone``, ``curves`` and ``classifier``
    (a method's own classifier)."""

    root: Path
    config_file: Path = field(init=False)
    checkpoints: Path = field(init=False)
    last_checkpoint: Path = field(init=False)
    logs: Path = field(init=False)
    backbone: Path = field(init=False)
    curves: Path = field(init=False)
    classifier: Path = field(init=False)

    def __post_init__(self) -> None:
        for name, relative in LAYOUT.items():
            object.__setattr__(self, name, self.root / relative)

    @classmethod
    def of(cls, config: Config) -> "RunFolder":
        return cls(Path(config.output_dir))

    def training_finished(self) -> bool:
        """Whether stage 1 has finished: ``backbone.pt`` written after the last checkpoint."""
        last, backbone = self.last_checkpoint, self.backbone
        return (
            last.is_file()
            and backbone.is_file()
            and backbone.stat().st_mtime >= last.stat().st_mtime
        )

    def results_dir(self, scored: PathLike) -> Path:
        """Where stage 2 writes the results of the ``scored`` weights: the folder itself for
        its own ``backbone.pt``, else ``<scored stem>_eval/`` next to the scored file, so
        scoring another checkpoint never overwrites a run's results."""
        scored = Path(scored).resolve()
        if scored == self.backbone.resolve():
            return self.root
        return scored.with_name(f"{scored.stem}_eval")


def saved_config(path: PathLike) -> dict[str, Any]:
    """The config (a dict) saved in the training checkpoint ``path`` by ``dscl-train``.

    Raises:
        CheckpointError: unreadable (with :func:`resume_advice`), or no saved config.
    """
    checkpoint = load_file(path, resume_advice(Path(path)))
    saved = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    config: dict[str, Any] | None = saved.get("config")
    if config is None:
        raise CheckpointError(f"'{path}' has no saved config: it was not written by dscl-train.")
    return config


def resume_advice(path: Path) -> str:
    """What to do when the checkpoint ``path`` cannot be read: resume from the previous
    checkpoint kept beside it (:func:`~dscl_plugin.safe_io.previous_path`), if there is
    one, or from another, or start over."""
    previous = previous_path(path)
    if previous.is_file() and previous != path:
        return (
            f"The previous checkpoint '{previous}' is kept: resume from it with "
            f"--resume {previous}, or start over in a new output_dir."
        )
    return "Resume from another checkpoint with --resume PATH, or start over in a new output_dir."


def changed_settings(
    saved: dict[str, Any], config: Config, keys: Iterable[str], free: Iterable[str] = RESUME_FREE
) -> list[tuple[str, object, object]]:
    """``(key, saved value, config value)`` for every leaf under ``keys`` where ``config``
    differs from the ``saved`` config (a dict), except the keys in ``free``."""
    current, changes = to_dict(config), []
    for key in keys:
        old, new = _flatten(_lookup(saved, key), key), _flatten(_lookup(current, key), key)
        for k in sorted(old.keys() | new.keys()):
            if old.get(k) != new.get(k) and k not in free:
                changes.append((k, old.get(k), new.get(k)))
    return changes


def resolve_resume(config: Config, resume: Resume) -> Path | None:
    """The checkpoint ``resume`` names (None for a fresh run), once its settings match.

    Raises:
        CheckpointError: a fresh run would overwrite ``last.ckpt``, or the checkpoint is
            missing or unreadable.
        ConfigError: the checkpoint was trained with other settings.
    """
    last = RunFolder.of(config).last_checkpoint
    if resume is None or resume is False:
        if last.exists():
            raise CheckpointError(
                f"'{last}' exists: pass --resume to continue that run, or set another "
                f"output_dir (now '{config.output_dir}')."
            )
        return None
    path = last if resume is True or resume == "last" else Path(resume)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint to resume from not found: '{path}'.")
    check_resume_config(config, path)
    return path


def check_resume_config(config: Config, path: Path) -> None:
    """Refuse to resume ``path`` with different training settings (reads the file once,
    so a corrupt checkpoint fails here, naming it).

    Raises:
        ConfigError: a setting of :data:`RESUME_KEYS` or an option of the method differs,
            or ``trainer.epochs`` shrank.
    """
    saved = saved_config(path)
    keys = (*RESUME_KEYS, method_options_key(config))
    changes = [f"{k}: {old!r} -> {new!r}" for k, old, new in changed_settings(saved, config, keys)]
    old_epochs, new_epochs = _lookup(saved, "trainer.epochs"), config.trainer.epochs
    if old_epochs is not None and new_epochs < old_epochs:
        changes.append(
            f"trainer.epochs: {old_epochs!r} -> {new_epochs!r} (may only grow, to extend a run)"
        )
    if changes:
        raise ConfigError(
            f"Cannot resume '{path}' with changed settings:\n  "
            + "\n  ".join(changes)
            + "\nResume with the checkpoint's settings (its config.yaml) or use a new output_dir."
        )


def resumes_finished(config: Config, resume: Resume) -> bool:
    """``resume`` names this run's last checkpoint and that run has finished stage 1
    (its settings are then checked as for any resume; an unfinished run's checkpoint is
    left to stage 1, which checks it once)."""
    folder = RunFolder.of(config)
    if not folder.training_finished():
        return False
    return resolve_resume(config, resume) == folder.last_checkpoint


def check_checkpoint_config(
    config: Config, checkpoint: PathLike, saved: dict[str, Any], own: Path | None = None
) -> None:
    """Refuse to score a checkpoint as another method or model than it was trained as
    (``saved``: its config; ``own``: that run's ``config.yaml``, named in the fix), on one
    line naming each difference and the fix.

    Raises:
        ConfigError: ``method``, a ``model.*`` setting or an option of the method differs
            from the checkpoint's.
    """
    keys = (*MODEL_KEYS, method_options_key(config))
    changes = changed_settings(saved, config, keys, free=("model.init_from",))
    if not changes:
        return
    shown = [f"{k} is {old!r} there, the config asks for {new!r}" for k, old, new in changes[:3]]
    more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
    known = own is not None and own.is_file()
    fix = f"--config {own}" if known else "the config it was trained with"
    raise ConfigError(
        f"checkpoint '{checkpoint}' was trained with other settings: {'; '.join(shown)}{more}; "
        f"evaluate it with {fix}."
    )


def _lookup(tree: Any, key: str) -> Any:
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _flatten(value: Any, prefix: str) -> dict[str, object]:
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for name, sub in value.items():
            flat.update(_flatten(sub, f"{prefix}.{name}"))
        return flat
    return {prefix: value}
