"""The package's error and warning types; a leaf module (no imports), so the CLI can catch
them without loading PyTorch Lightning or OmegaConf."""

# how PyTorch re-creates an exception raised in a DataLoader worker: this text, then the
# worker's traceback, whose last line is "<module>.<type>: <message>"
WORKER_TRACEBACK = "Original Traceback (most recent call last):"


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


class ConfigNote(UserWarning):
    """How a config was read where the file does not say it (e.g. the recipe it starts
    from), on one line; the CLI prints it on stderr before any value problem of that config."""
