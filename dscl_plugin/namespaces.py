"""Our classes under the names users look for in Lightly's and PML's namespaces:
``lightly.loss.DSCLLoss``, ``pytorch_metric_learning.losses.DSCLLoss``, ...

One policy for both libraries: a name the library does not define is added; a name it
already defines (by another object) is never replaced, and a warning says where to import
ours from instead. Called once by ``import dscl_plugin``.
"""

import warnings
from types import ModuleType


def expose(namespace: ModuleType, obj: type) -> bool:
    """Sets ``namespace.<obj.__name__> = obj`` unless another object owns that name there
    (then a ``UserWarning`` names the module to import ``obj`` from); returns whether
    that name refers to ``obj``. Setting the same object again is silent."""
    name = obj.__name__
    existing = getattr(namespace, name, None)
    if existing is None:
        setattr(namespace, name, obj)
        return True
    if existing is obj:
        return True
    warnings.warn(
        f"{namespace.__name__}.{name} already exists ({existing!r}); dscl_plugin leaves it "
        f"in place. Import {name} from {obj.__module__} instead.",
        stacklevel=2,
    )
    return False


def register_library_names() -> list[str]:
    """Exposes ``DSCLLoss``, ``KCLLoss``, ``PBSDLoss``, ``SupConLoss`` in ``lightly.loss``,
    ``DSCLTransform`` in ``lightly.transforms``, the PML ``DSCLLoss`` and
    ``DSCLCrossBatchMemory`` in ``pytorch_metric_learning.losses`` and ``DSCLMiner`` in
    ``pytorch_metric_learning.miners`` (:func:`expose`); returns the qualified names that
    refer to our classes."""
    import lightly.loss
    import lightly.transforms
    from pytorch_metric_learning import losses as pml_losses
    from pytorch_metric_learning import miners as pml_miners

    from dscl_plugin.losses.contrastive import DSCLLoss, SupConLoss
    from dscl_plugin.losses.kcl import KCLLoss
    from dscl_plugin.losses.pbsd import PBSDLoss
    from dscl_plugin.pml.loss import DSCLLoss as PMLDSCLLoss
    from dscl_plugin.pml.memory import DSCLCrossBatchMemory
    from dscl_plugin.pml.miner import DSCLMiner
    from dscl_plugin.transforms.views import DSCLTransform

    entries = [
        (lightly.loss, DSCLLoss),
        (lightly.loss, KCLLoss),
        (lightly.loss, PBSDLoss),
        (lightly.loss, SupConLoss),
        (lightly.transforms, DSCLTransform),
        (pml_losses, PMLDSCLLoss),
        (pml_losses, DSCLCrossBatchMemory),
        (pml_miners, DSCLMiner),
    ]
    return [f"{ns.__name__}.{obj.__name__}" for ns, obj in entries if expose(ns, obj)]
