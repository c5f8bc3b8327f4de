"""Views of an image: the DSCL views with their patches and the stage-2 transforms
(:mod:`.views`), their collate (:mod:`.collate`) and the same views made for a whole batch
on its device with Kornia (:mod:`.kornia_views`, imported on use)."""

from dscl_plugin.transforms.collate import PatchViewCollate
from dscl_plugin.transforms.views import (
    COLOUR_AUGMENTATION,
    ColourAugmentation,
    DSCLTransform,
    eval_transform,
    probe_transform,
)

__all__ = [
    "COLOUR_AUGMENTATION",
    "ColourAugmentation",
    "DSCLTransform",
    "PatchViewCollate",
    "eval_transform",
    "probe_transform",
]
