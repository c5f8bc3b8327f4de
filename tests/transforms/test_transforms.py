"""DSCLTransform views and patches, eval_transform, PatchViewCollate."""

import numpy as np
import PIL.Image
import pytest
import torch
from lightly.data import LightlyDataset
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F

from dscl_plugin.transforms import DSCLTransform, PatchViewCollate, eval_transform

NO_AUGMENT = dict(hflip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)


def _image(height: int = 40, width: int = 48, seed: int = 0) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _to_pil(view: torch.Tensor) -> PIL.Image.Image:
    """The uint8 image behind an unnormalised view (exact: views are k / 255)."""
    return F.to_pil_image((view * 255).round().to(torch.uint8))


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)  # Lightly's GaussianBlur draws from numpy


def test_shapes_and_dtypes():
    view_q, view_k, patches, boxes = DSCLTransform(32, 16, num_patches=3)(_image())
    assert view_q.shape == view_k.shape == (3, 32, 32)
    assert patches.shape == (3, 3, 16, 16) and boxes.shape == (3, 4)
    assert view_q.dtype == patches.dtype == boxes.dtype == torch.float32


@pytest.mark.filterwarnings("ignore:The function `to_tensor")  # inside Lightly's GaussianBlur
def test_tensor_input_is_supported():
    image = F.pil_to_tensor(_image())
    view_q, view_k, patches, boxes = DSCLTransform(32, 16, num_patches=2)(image)
    assert view_q.shape == (3, 32, 32) and patches.shape == (2, 3, 16, 16)


def test_no_patches_gives_two_views():
    views = DSCLTransform(32, 16, num_patches=0)(_image())
    assert len(views) == 2 and views[0].shape == views[1].shape == (3, 32, 32)


def test_boxes_inside_the_view_with_patch_scale_and_ratio():
    _seed(0)
    size, transform = 64, DSCLTransform(64, 16, num_patches=50, **NO_AUGMENT)
    boxes = transform(_image())[3]
    x1, y1, x2, y2 = boxes.unbind(1)
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= size).all() and (y2 <= size).all()
    width, height = x2 - x1, y2 - y1
    assert (width > 0).all() and (height > 0).all()
    assert boxes.eq(boxes.round()).all()  # whole pixels
    # one pixel of rounding on each side
    assert ((width + 1) * (height + 1) >= 0.05 * size**2).all()
    assert ((width - 1) * (height - 1) <= 0.6 * size**2).all()
    assert ((width + 1) / (height - 1) >= 3 / 4).all()
    assert ((width - 1) / (height + 1) <= 4 / 3).all()


def test_patches_equal_resized_crops_of_the_query_crop_without_augmentation():
    _seed(1)
    transform = DSCLTransform(32, 12, num_patches=5, normalize=None, **NO_AUGMENT)
    view_q, _, patches, boxes = transform(_image())
    crop = _to_pil(view_q)
    for patch, (x1, y1, x2, y2) in zip(patches, boxes.long().tolist()):
        expected = F.resized_crop(crop, y1, x1, y2 - y1, x2 - x1, [12, 12])
        torch.testing.assert_close(patch, F.to_dtype(F.to_image(expected), scale=True))


def test_query_view_is_cropped_then_flipped_and_normalised():
    image = _image(36, 36)
    common = dict(crop_scale=(1.0, 1.0), jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
    expected = F.to_dtype(F.to_image(F.resize(image, [32, 32])), scale=True)
    unflipped = DSCLTransform(32, 16, hflip_prob=0.0, normalize=None, **common)(image)[0]
    flipped = DSCLTransform(32, 16, hflip_prob=1.0, normalize=None, **common)(image)[0]
    torch.testing.assert_close(unflipped, expected)
    torch.testing.assert_close(flipped, expected.flip(-1))
    normalised = DSCLTransform(32, 16, hflip_prob=0.0, **common)(image)[0]
    mean = torch.tensor(IMAGENET_NORMALIZE["mean"])[:, None, None]
    std = torch.tensor(IMAGENET_NORMALIZE["std"])[:, None, None]
    torch.testing.assert_close(normalised, (expected - mean) / std)


def test_key_view_has_its_own_crop_and_jitter():
    _seed(2)
    transform = DSCLTransform(32, 16, num_patches=0, normalize=None, **NO_AUGMENT)
    view_q, view_k = transform(_image())
    assert not torch.equal(view_q, view_k)
    no_jitter = DSCLTransform(
        32,
        16,
        num_patches=0,
        crop_scale=(1.0, 1.0),
        key_jitter_prob=0.0,
        normalize=None,
        **NO_AUGMENT,
    )
    view_q, view_k = no_jitter(_image(32, 32))
    torch.testing.assert_close(view_q, view_k)


def test_patches_get_their_own_colour_augmentation():
    _seed(3)
    transform = DSCLTransform(
        32,
        16,
        num_patches=3,
        normalize=None,
        hflip_prob=0.0,
        jitter_prob=0.0,
        grayscale_prob=1.0,
        blur_prob=0.0,
    )
    patches = transform(_image())[2]
    torch.testing.assert_close(patches[:, 0], patches[:, 1])
    torch.testing.assert_close(patches[:, 0], patches[:, 2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(patch_size=40), "patch_size"),
        (dict(num_patches=-1), "num_patches"),
        (dict(patch_scale=(0.6, 0.05)), "patch_scale"),
        (dict(crop_scale=(0.1, 1.5)), "crop_scale"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DSCLTransform(**{"input_size": 32, "patch_size": 16, **kwargs})


def test_eval_transform():
    image = _image(40, 48)
    small = eval_transform(32, normalize=None)(image)
    torch.testing.assert_close(
        small,
        F.to_dtype(F.to_image(F.center_crop(F.resize(image, 32), 32)), scale=True),
    )
    large = eval_transform(224)(_image(300, 400))
    assert large.shape == (3, 224, 224)
    with pytest.raises(ValueError, match="crop_fraction"):
        eval_transform(32, crop_fraction=1.5)


def _sample(num_patches: int):
    return DSCLTransform(32, 16, num_patches=num_patches)(_image())


def test_collate_with_and_without_filenames():
    batch = [(_sample(2), 3), (_sample(2), 1)]
    view_q, view_k, patches, boxes, labels = PatchViewCollate()(batch)
    assert view_q.shape == view_k.shape == (2, 3, 32, 32)
    assert patches.shape == (2, 2, 3, 16, 16) and boxes.shape == (2, 2, 4)
    assert labels.dtype == torch.long and labels.tolist() == [3, 1]
    torch.testing.assert_close(patches[1], batch[1][0][2])
    with_names = PatchViewCollate()([(v, torch.tensor(y), f"{y}.png") for v, y in batch])
    for a, b in zip(with_names, (view_q, view_k, patches, boxes, labels)):
        torch.testing.assert_close(a, b)


def test_collate_two_views_and_bad_batches():
    view_q, view_k, patches, boxes, labels = PatchViewCollate()([(_sample(0), 0)] * 3)
    assert view_q.shape == (3, 3, 32, 32) and patches is None and boxes is None
    with pytest.raises(ValueError, match="view counts"):
        PatchViewCollate()([(_sample(0), 0), (_sample(2), 1)])
    with pytest.raises(ValueError, match="empty"):
        PatchViewCollate()([])


class _Images(Dataset):
    """A torchvision-style dataset of random images with a ``transform``."""

    def __init__(self, num: int) -> None:
        self.images = [_image(36, 36, seed=i) for i in range(num)]
        self.transform = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), index % 3


def test_dataloader_with_workers_and_lightly_dataset():
    dataset = LightlyDataset.from_torch_dataset(
        _Images(6), transform=DSCLTransform(32, 16, num_patches=2)
    )
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=PatchViewCollate())
    batches = list(loader)
    assert len(batches) == 2
    view_q, view_k, patches, boxes, labels = batches[1]
    assert view_q.shape == (3, 3, 32, 32) and patches.shape == (3, 2, 3, 16, 16)
    assert labels.tolist() == [0, 1, 2]


def test_colour_augmentation_defaults_live_in_one_place():
    import dataclasses
    import inspect

    from dscl_plugin.training.schema import DataConfig
    from dscl_plugin.transforms import COLOUR_AUGMENTATION, ColourAugmentation, probe_transform

    defaults = dataclasses.asdict(ColourAugmentation())
    assert defaults == dict(
        jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_prob=0.8,
        grayscale_prob=0.2,
        blur_prob=0.5,
        blur_sigmas=(0.1, 2.0),
    )
    for fn in (DSCLTransform.__init__, probe_transform):
        parameters = inspect.signature(fn).parameters
        assert {key: parameters[key].default for key in defaults} == defaults, fn
    assert inspect.signature(DSCLTransform.__init__).parameters["key_jitter"].default == (
        0.4,
        0.4,
        0.4,
        0.0,
    )
    data = DataConfig()
    assert (
        tuple(data.color_jitter),
        data.jitter_prob,
        data.grayscale_prob,
        data.blur_prob,
    ) == (COLOUR_AUGMENTATION.jitter, 0.8, 0.2, 0.5)


def test_colour_augmentation_checks_and_builds_the_q_view_colour_steps():
    from dscl_plugin.transforms import ColourAugmentation

    with pytest.raises(ValueError, match=r"grayscale_prob must be in \[0.0, 1.0\], got 1.5"):
        ColourAugmentation(grayscale_prob=1.5)
    with pytest.raises(ValueError, match="jitter must be .* hue <= 0.5"):
        ColourAugmentation(jitter=(0.4, 0.4, 0.4, 0.7))
    with pytest.raises(ValueError, match="blur_prob must be in"):
        DSCLTransform(32, 16, blur_prob=-0.1)
    _seed(4)
    gray = ColourAugmentation(jitter_prob=0.0, grayscale_prob=1.0, blur_prob=0.0)
    view = gray.transform(normalize=None)(_image(8, 8))
    torch.testing.assert_close(view[0], view[1])
    torch.testing.assert_close(view[0], view[2])
