"""torchvision and the torch it was built for: each torchvision release is built for one
torch release, and with another its compiled operators do not load (``import
torchvision`` raises ``RuntimeError: operator torchvision::nms does not exist``, from
inside Lightly, PML or this package). :func:`import_torchvision` says so on one line."""

import importlib.metadata

#: The pair this package is tested with; any torchvision with the torch it was built for works.
TESTED_PAIR = "torch==2.14.1 torchvision==0.29.1"


def import_torchvision() -> None:
    """Imports torchvision once, before anything that needs it.

    Raises:
        ImportError: torchvision's operators do not load with this torch, naming both
            versions and the command that installs a pair built together.
    """
    try:
        import torchvision  # noqa: F401
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        import torch

        raise ImportError(
            f"torchvision {importlib.metadata.version('torchvision')} was not built for torch "
            f"{torch.__version__} ({error}); install a pair in one command from one index, "
            f"e.g. pip install {TESTED_PAIR} (docs/install.md)"
        ) from None
