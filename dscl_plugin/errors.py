"""The package's error and warning types; a leaf module (nothing of the package
imported), so the CLI can catch them without loading PyTorch Lightning or OmegaConf."""

from pathlib import Path

# how PyTorch re-creates an exception raised in a DataLoader worker: this text, then the
# worker's traceback, whose last line is "<module>.<type>: <message>"
WORKER_TRACEBACK = "Original Traceback (most recent call last):"


class InvalidValue(ValueError):
    """A bad argument value; ``name`` is the argument, ``rule`` what it must satisfy (the
    message is ``"<name> <rule>."``). The checks of :mod:`dscl_plugin.checks` raise it."""

    def __init__(self, name: str, rule: str) -> None:
        super().__init__(f"{name} {rule}.")
        self.name = name
        self.rule = rule


class ConfigError(ValueError):
    """An invalid configuration (or data it points at); the message names the key path and
    the fix. The CLI prints it on one line and exits with code 2."""


class DataError(ValueError):
    """A data file that cannot be read: empty, truncated or corrupt. The message names the
    file and what is wrong; the CLI prints it on one line and exits with code 2.

    Raised in a ``DataLoader`` worker, it reaches the main process re-created by PyTorch
    from the worker's traceback text; it then keeps the worker's one-line message.
    """

    def __init__(self, message: str) -> None:
        if WORKER_TRACEBACK in message:
            last = message.rstrip().rsplit("\n", 1)[-1]
            message = last.split(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


class CheckpointError(RuntimeError):
    """A checkpoint or weights file is missing, unreadable or does not fit the model."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf; training stopped before the update."""


class TrainingInterrupted(KeyboardInterrupt):
    """Stage 1 stopped by Ctrl-C; ``checkpoint`` is the last complete checkpoint."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(str(checkpoint))
        self.checkpoint = checkpoint


class ConfigNote(UserWarning):
    """How a config was read where the file does not say it (e.g. the recipe it starts
    from), on one line; the CLI prints it on stderr before any value problem of that config."""
