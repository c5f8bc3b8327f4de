"""The package's error types; a leaf module (no imports), so the CLI can catch them
without loading PyTorch Lightning or OmegaConf."""


class ConfigError(ValueError):
    """An invalid configuration (or data it points at); the message names the key path and
    the fix. The CLI prints it on one line and exits with code 2."""


class CheckpointError(RuntimeError):
    """A checkpoint or weights file is missing, unreadable or does not fit the model."""
