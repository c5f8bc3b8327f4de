"""One policy for our names in Lightly's and PML's namespaces (dscl_plugin.namespaces):
an absent name is added, a foreign name is never replaced (a warning says where ours is),
and registering our own object again is silent."""

import importlib.util
import warnings

import lightly.loss
import lightly.transforms
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

import dscl_plugin
from dscl_plugin import pml
from dscl_plugin.losses import DSCLLoss, KCLLoss, PBSDLoss, SupConLoss
from dscl_plugin.namespaces import expose, register_library_names
from dscl_plugin.transforms import DSCLTransform

REGISTERED = [
    (lightly.loss, DSCLLoss),
    (lightly.loss, KCLLoss),
    (lightly.loss, PBSDLoss),
    (lightly.loss, SupConLoss),
    (lightly.transforms, DSCLTransform),
    (pml_losses, pml.DSCLLoss),
    (pml_losses, pml.DSCLCrossBatchMemory),
    (pml_miners, pml.DSCLMiner),
]
IDS = [f"{namespace.__name__}.{ours.__name__}" for namespace, ours in REGISTERED]
# one name of each library that a future release might define itself
CLASHES = [(lightly.loss, DSCLLoss), (pml_losses, pml.DSCLLoss)]
CLASH_IDS = ["lightly", "pml"]


@pytest.mark.parametrize("namespace, ours", REGISTERED, ids=IDS)
def test_import_dscl_plugin_exposes_our_classes(namespace, ours):
    assert getattr(namespace, ours.__name__) is ours


def test_the_libraries_own_names_are_untouched():
    assert lightly.loss.NTXentLoss.__module__ == "lightly.loss.ntx_ent_loss"
    assert pml_losses.SupConLoss.__module__ == "pytorch_metric_learning.losses.supcon_loss"
    assert "DSCLLoss" not in pml_losses.CrossBatchMemory.supported_losses()
    from lightly.loss import DSCLLoss as imported

    assert imported is DSCLLoss


def test_registering_our_own_objects_again_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        names = register_library_names()
        for namespace, ours in REGISTERED:
            assert expose(namespace, ours)
    assert names == IDS


def test_importing_dscl_plugin_again_is_silent():
    spec = importlib.util.spec_from_file_location("dscl_plugin", dscl_plugin.__file__)
    second = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec.loader.exec_module(second)  # a second import (e.g. importlib.reload)
    for namespace, ours in REGISTERED:
        assert getattr(namespace, ours.__name__) is ours


@pytest.mark.parametrize("namespace, ours", CLASHES, ids=CLASH_IDS)
def test_a_foreign_name_is_never_replaced_and_a_warning_says_where_ours_is(
    monkeypatch, namespace, ours
):
    foreign = type(ours.__name__, (), {})
    monkeypatch.setattr(namespace, ours.__name__, foreign)  # as if the library shipped one
    where = rf"{namespace.__name__}\.DSCLLoss already exists.*leaves it in place"
    with pytest.warns(UserWarning, match=rf"{where}\. Import DSCLLoss from {ours.__module__}"):
        names = register_library_names()
    assert getattr(namespace, ours.__name__) is foreign
    assert names == [name for name in IDS if name != f"{namespace.__name__}.DSCLLoss"]


@pytest.mark.parametrize("namespace, ours", CLASHES, ids=CLASH_IDS)
def test_an_absent_name_is_added(monkeypatch, namespace, ours):
    monkeypatch.delattr(namespace, ours.__name__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert expose(namespace, ours)
    assert getattr(namespace, ours.__name__) is ours


def test_each_loss_called_the_other_librarys_way_points_to_the_other():
    """``dscl_plugin.DSCLLoss`` takes (query, key, labels), PML's DSCLLoss (embeddings,
    labels): each, called the other way, names the one that takes that call."""
    embeddings, labels = torch.randn(8, 4), torch.tensor([0, 1, 2, 3] * 2)
    pml_call = r"as in the PML call loss\(embeddings, labels\): for that call use "
    with pytest.raises(TypeError, match=r"got a 1-D key \(8,\), " + pml_call + "pytorch_metric"):
        dscl_plugin.DSCLLoss()(embeddings, labels)
    with pytest.raises(TypeError, match="got no labels, .*losses.DSCLLoss .import dscl_plugin"):
        dscl_plugin.DSCLLoss()(embeddings, embeddings)
    with pytest.raises(TypeError, match="use pytorch_metric_learning.losses.SupConLoss$"):
        dscl_plugin.SupConLoss()(embeddings, labels)
    query, key = embeddings[:4], embeddings[4:]
    with pytest.raises(TypeError) as error:
        pml_losses.DSCLLoss()(query, key, labels[:4])
    assert "got (B, D) float features (4, 4) as labels; for loss(query, key, labels[, queue, " in (
        str(error.value)
    )
    assert str(error.value).endswith(
        "use dscl_plugin.DSCLLoss, or here loss(query, labels, ref_emb=key, ref_labels=labels)"
    )
    # the two right calls (and the fix the message gives) agree
    lightly_style = dscl_plugin.DSCLLoss(temperature=0.1)(query, key, labels[:4])
    fix = pml_losses.DSCLLoss(temperature=0.1)(
        query,
        labels[:4],
        ref_emb=key,
        ref_labels=labels[:4],
    )
    torch.testing.assert_close(fix, lightly_style)
