"""DeviceViews (data.pipeline: device) draws from DSCLTransform's distributions: crop area
and aspect, flip rate, jitter factors, grayscale rate, patch boxes; exact pixels where the
two paths agree by construction; seeding; the config check and the lazy Kornia import.

The statistical tests compare fixed-seed samples of n draws; a two-sample KS test at
n = 4000 rejects a shift of the distribution functions by more than ~0.04 (p < 0.001 is
the failure threshold, so an identical distribution fails with probability 0.001)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from helpers import CONFIG
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop

from dscl_plugin.data import IndexedImages, build_dataset
from dscl_plugin.errors import ConfigError
from dscl_plugin.training.config import load_config
from dscl_plugin.training.device_views import BatchViews, step_seed
from dscl_plugin.training.validation import check_pipeline
from dscl_plugin.transforms import DSCLTransform
from dscl_plugin.transforms.kornia_views import DeviceViews

pytest.importorskip("kornia")

N = 4000
PLAIN = dict(  # geometry only: no colour, no normalisation
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    key_jitter_prob=0.0,
    normalize=None,
)


def torchvision_boxes(size, scale, n, ratio=(3 / 4, 4 / 3)):
    """(w, h) of n torchvision ``RandomResizedCrop.get_params`` draws on a size x size image."""
    torch.manual_seed(1)
    image = torch.zeros(1, size, size)
    drawn = [RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)]
    return np.array([(w, h) for _, _, h, w in drawn], dtype=float)


def assert_same_distribution(ours, theirs):
    assert ks_2samp(ours, theirs).pvalue > 1e-3
    quantiles = [0.1, 0.25, 0.5, 0.75, 0.9]
    spread = np.quantile(theirs, 0.9) - np.quantile(theirs, 0.1)
    assert np.quantile(ours, quantiles) == pytest.approx(
        np.quantile(theirs, quantiles), abs=0.1 * spread
    )


@pytest.mark.parametrize("size, scale", [(28, (0.3, 1.0)), (32, (0.08, 1.0))])
def test_view_crop_area_and_aspect_match_torchvision(size, scale):
    views = DeviceViews(input_size=size, patch_size=size // 2, crop_scale=scale, **PLAIN)
    torch.manual_seed(0)
    corners = views.crop.forward_parameters((N, 3, size, size))["src"]
    w, h = (
        (corners[:, 2] - corners[:, 0] + 1).T.double().numpy()
    )  # float64 as the reference: equal atoms
    ref_w, ref_h = torchvision_boxes(size, scale, N).T
    assert_same_distribution(w * h / size**2, ref_w * ref_h / size**2)
    assert_same_distribution(np.log(w / h), np.log(ref_w / ref_h))
    assert (corners >= 0).all() and (corners <= size - 1).all()


def test_patch_boxes_match_torchvision_and_lie_in_the_view():
    size, patch = 16, 8
    views = DeviceViews(
        input_size=size,
        patch_size=patch,
        num_patches=4,
        patch_scale=(0.2, 0.6),
        **PLAIN,
    )
    torch.manual_seed(0)
    images = torch.randint(0, 256, (N // 4, 3, 20, 20), dtype=torch.uint8)
    view_q, view_k, patches, boxes = views(images)
    assert view_q.shape == view_k.shape == (N // 4, 3, size, size)
    assert patches.shape == (N // 4, 4, 3, patch, patch) and boxes.shape == (
        N // 4,
        4,
        4,
    )
    assert boxes.dtype == torch.float32 and torch.equal(boxes, boxes.round())
    x1, y1, x2, y2 = boxes.reshape(-1, 4).T
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= size).all() and (y2 <= size).all()
    assert (x2 > x1).all() and (y2 > y1).all()
    w, h = (x2 - x1).double().numpy(), (y2 - y1).double().numpy()
    ref_w, ref_h = torchvision_boxes(size, (0.2, 0.6), N).T
    assert_same_distribution(w * h, ref_w * ref_h)
    assert_same_distribution(np.log(w / h), np.log(ref_w / ref_h))
    # each patch is its box of the q view's geometric crop (after the view's flip), resized
    # as torchvision's tensor resized_crop (bilinear, half-pixel centres, no antialiasing),
    # then flipped or not
    for i in range(20):
        for j in range(4):
            left, top, right, bottom = boxes[i, j].int().tolist()
            expected = F.resized_crop(
                view_q[i],
                top,
                left,
                bottom - top,
                right - left,
                [patch, patch],
                antialias=False,
            )
            error = min(
                (patches[i, j] - e).abs().max().item() for e in (expected, expected.flip(-1))
            )
            assert error < 1e-5


def left_dark_right_bright(n, size=12):
    images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    images[..., size // 2 :] = 255
    return images


@pytest.mark.parametrize("hflip_prob", [0.0, 0.5])
def test_flip_rate(hflip_prob):
    """Full-size crops (scale 1) of a half-bright image: a flip puts the bright half left."""
    views = DeviceViews(
        input_size=12,
        patch_size=6,
        num_patches=1,
        crop_scale=(1.0, 1.0),
        patch_scale=(1.0, 1.0),
        hflip_prob=hflip_prob,
        **PLAIN,
    )
    torch.manual_seed(0)
    view_q, view_k, patches, _ = views(left_dark_right_bright(N // 2))
    for images in (view_q, view_k, patches[:, 0]):
        flipped = (images[:, 0, :, 0] > 0.5).all(dim=1).float()
        assert flipped.mean().item() == pytest.approx(hflip_prob, abs=4 * (0.25 / (N // 2)) ** 0.5)


def brightness_factors(outputs, value):
    return (outputs[:, 0, 0, 0] * 255 / value).numpy()


@pytest.mark.slow
def test_brightness_factors_match_the_loader_path():
    """A constant grey image: the q-view brightness factor is out / in, drawn from
    U(0.6, 1.4) with probability jitter_prob, else 1 (loader: PIL, rounded to uint8)."""
    value, n = 100, 1000
    options = dict(
        input_size=8,
        patch_size=4,
        num_patches=0,
        jitter=(0.4, 0.0, 0.0, 0.0),
        jitter_prob=0.8,
        grayscale_prob=0.0,
        blur_prob=0.0,
        normalize=None,
    )
    torch.manual_seed(0)
    device_q, device_k, _, _ = DeviceViews(**options, key_jitter=(0.4, 0, 0, 0))(
        torch.full((n, 1, 8, 8), value, dtype=torch.uint8)
    )
    loader = DSCLTransform(**options, key_jitter=(0.4, 0, 0, 0))
    image = Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).convert("RGB")
    loader_q = torch.stack([loader(image)[0] for _ in range(n)])
    # float64 and rounded: "unchanged" is the same atom 1.0 on both paths
    ours, theirs = (
        np.round(brightness_factors(q, value).astype(float), 4) for q in (device_q, loader_q)
    )
    assert ours.min() >= 0.6 - 1e-6 and ours.max() <= 1.4 + 1e-6
    assert ours.min() < 0.62 and ours.max() > 1.38  # the whole range is drawn
    unchanged = np.mean(np.abs(ours - 1) < 1e-6)
    assert unchanged == pytest.approx(0.2, abs=4 * (0.16 / n) ** 0.5)  # p 0.8 of jitter
    assert ks_2samp(ours, theirs).pvalue > 1e-3
    key = brightness_factors(device_k, value)  # the key jitter is always applied
    assert np.mean(np.abs(key - 1) < 1e-6) < 0.01 and key.min() >= 0.6 - 1e-6


def test_grayscale_rate_and_normalisation():
    """A pure red image: grayscale (p 0.2) gives ITU-R 601 luma 0.299 in every channel;
    without jitter the views are exactly the normalised colour."""
    n, red = 2000, torch.zeros(2000, 3, 8, 8, dtype=torch.uint8)
    red[:, 0] = 255
    views = DeviceViews(
        input_size=8,
        patch_size=4,
        num_patches=1,
        jitter_prob=0.0,
        grayscale_prob=0.2,
        blur_prob=0.0,
        key_jitter_prob=0.0,
    )
    torch.manual_seed(0)
    view_q, view_k, patches, _ = views(red)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    grey = ((0.299 - mean) / std).view(3, 1, 1).expand(3, 8, 8)
    colour = ((torch.tensor([1.0, 0.0, 0.0]) - mean) / std).view(3, 1, 1).expand(3, 8, 8)
    is_grey = (view_q - grey).abs().amax(dim=(1, 2, 3)) < 1e-3
    is_colour = (view_q - colour).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert (is_grey | is_colour).all()
    assert is_grey.float().mean().item() == pytest.approx(0.2, abs=4 * (0.16 / n) ** 0.5)
    assert ((view_k - colour).abs().amax(dim=(1, 2, 3)) < 1e-5).all()  # key: no grayscale
    assert view_q.dtype == patches.dtype == torch.float32


def test_batch_views_are_seeded_by_seed_rank_and_step():
    images = torch.randint(0, 256, (10, 1, 16, 16), dtype=torch.uint8)
    batch = BatchViews(images, DeviceViews(input_size=16, patch_size=8, num_patches=2), seed=0)
    indices, labels = torch.tensor([3, 1, 4]), torch.tensor([0, 1, 2])
    before = torch.get_rng_state()
    first, again = batch(indices, labels, step=5), batch(indices, labels, step=5)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is left as it was
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], batch(indices, labels, step=6)[0])
    assert not torch.equal(first[0], batch(indices, labels, step=5, rank=1)[0])
    assert torch.equal(first[4], labels) and first[3].shape == (3, 2, 4)
    assert len({step_seed(0, r, s) for r in range(3) for s in range(100)}) == 300


def test_indexed_images_serve_uint8_by_index():
    dataset = build_dataset("digits_lt", "train", input_size=16)
    indexed = IndexedImages(dataset)
    assert indexed.images.shape == (len(dataset), 1, 16, 16) and indexed.images.dtype == torch.uint8
    assert indexed[7] == (7, dataset.targets[7]) and indexed.class_counts == dataset.class_counts
    assert torch.equal(indexed.images[7, 0], torch.from_numpy(dataset.images[7]))
    with pytest.raises(ValueError, match="ArrayImageDataset"):
        IndexedImages(torch.utils.data.TensorDataset(torch.zeros(2)))


def test_bad_batches_and_arguments_raise():
    views = DeviceViews(input_size=8, patch_size=4, num_patches=1)
    with pytest.raises(ValueError, match="uint8"):
        views(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="patch_size"):
        DeviceViews(input_size=8, patch_size=16)
    with pytest.raises(ValueError, match="jitter_prob"):
        DeviceViews(jitter_prob=1.5)


def test_config_asks_device_only_for_in_memory_datasets(monkeypatch):
    assert load_config(CONFIG, ["data.pipeline=device"]).data.pipeline == "device"
    with pytest.raises(
        ConfigError,
        match=r"data.pipeline: 'device' works only for the in-memory datasets \(digits_lt, "
        r"fashion_mnist_lt, cifar10_lt, cifar100_lt\); use data.pipeline=loader",
    ):
        load_config(CONFIG, ["data.pipeline=device", "data.name=image_folder"])
    with pytest.raises(ConfigError, match=r"data.pipeline: must be one of \['loader', 'device'\]"):
        load_config(CONFIG, ["data.pipeline=gpu"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "kornia" else real(name, *a),
    )
    with pytest.raises(
        ConfigError,
        match=r"data.pipeline: 'device' needs Kornia.*pip install 'dscl-plugin\[fast\]'",
    ):
        load_config(CONFIG, ["data.pipeline=device"])
    with pytest.raises(ImportError, match=r"dscl-plugin\[fast\]"):
        DeviceViews()
    check_pipeline("loader", "image_folder")  # the loader path needs neither


@pytest.mark.slow
def test_cli_without_kornia_exits_2_naming_the_extra(tmp_path):
    """A subprocess in which kornia cannot be found: a one-line error, exit status 2."""
    code = (
        "import importlib.util, sys; real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'kornia' else real(n, *a)\n"
        "from dscl_plugin.cli import train_main\n"
        f"sys.exit(train_main(['--config', {CONFIG!r}, 'data.pipeline=device', "
        f"'output_dir={tmp_path}']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert (
        "data.pipeline: 'device' needs Kornia" in result.stderr
        and "dscl-plugin[fast]" in result.stderr
    )


@pytest.mark.slow
def test_import_does_not_load_kornia():
    code = (
        "import sys, dscl_plugin, dscl_plugin.training\n"
        "from dscl_plugin.training.config import load_config\n"
        f"load_config({CONFIG!r}, ['data.pipeline=device'])\n"
        "print('kornia' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
