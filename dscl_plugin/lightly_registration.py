"""Expose our parts in Lightly's namespaces (``lightly.loss.DSCLLoss``, ...).

Only names Lightly does not define are added; an existing Lightly name is never replaced.
Called by ``import dscl_plugin``.
"""

from typing import List


def register_lightly_names() -> List[str]:
    """Add ``DSCLLoss``, ``PBSDLoss``, ``SupConLoss`` to ``lightly.loss`` and ``DSCLTransform``
    to ``lightly.transforms`` where missing; returns the qualified names added."""
    import lightly.loss
    import lightly.transforms

    from dscl_plugin.losses import DSCLLoss, PBSDLoss, SupConLoss
    from dscl_plugin.transforms import DSCLTransform

    entries = [
        (lightly.loss, DSCLLoss),
        (lightly.loss, PBSDLoss),
        (lightly.loss, SupConLoss),
        (lightly.transforms, DSCLTransform),
    ]
    added = []
    for module, obj in entries:
        if not hasattr(module, obj.__name__):
            setattr(module, obj.__name__, obj)
            added.append(f"{module.__name__}.{obj.__name__}")
    return added
