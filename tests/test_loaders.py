"""The data-loader levers (scvi_hub_workflow.loaders) become the right scvi-tools train() arguments,
and a model trained with them really drew its minibatches the way asked (on the CPU here)."""

from __future__ import annotations

import pytest
from scvi_hub_workflow.loaders import (
    LoaderSettings,
    loader_train_kwargs,
    supports_data_on_device,
    used_data_on_device,
)


@pytest.fixture(scope="module")
def scvi_model():
    import scvi

    adata = scvi.data.synthetic_iid(batch_size=150, n_genes=40, n_batches=2)
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    return scvi.model.SCVI(adata, n_hidden=16, n_latent=4)


def kwargs_for(loader, model, **overrides):
    args = {"accelerator": "cpu", "batch_size": 64, "train_size": 0.8, "max_epochs": 2}
    return loader_train_kwargs(loader, model, **(args | overrides))


def test_defaults_add_nothing(scvi_model):
    # Today's behaviour: train() gets no loader arguments at all.
    assert kwargs_for(LoaderSettings(), scvi_model) == {}


def test_host_levers_become_datasplitter_kwargs(scvi_model):
    loader = LoaderSettings(
        pin_memory=True, num_workers=2, persistent_workers=True, load_sparse_tensor=True
    )
    assert kwargs_for(loader, scvi_model) == {
        "datasplitter_kwargs": {"pin_memory": True, "num_workers": 2, "persistent_workers": True},
        "load_sparse_tensor": True,
    }


def test_data_on_device_is_a_device_backed_datamodule(scvi_model):
    from scvi.dataloaders import DeviceBackedDataSplitter

    kwargs = kwargs_for(LoaderSettings(data_on_device=True), scvi_model, max_epochs=None)
    datamodule = kwargs["datamodule"]
    assert isinstance(datamodule, DeviceBackedDataSplitter)
    assert (datamodule.batch_size, datamodule.train_size, datamodule.shuffle) == (64, 0.8, True)
    # train() cannot size max_epochs from a datamodule: it is decided here, as train() would.
    assert isinstance(kwargs["max_epochs"], int) and kwargs["max_epochs"] > 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_workers": -1}, "num_workers must be >= 0"),
        ({"persistent_workers": True}, "persistent_workers needs num_workers > 0"),
        ({"data_on_device": True, "num_workers": 2}, "do not apply"),
        ({"data_on_device": True, "load_sparse_tensor": True}, "do not apply"),
    ],
)
def test_contradictory_settings_fail(settings, message):
    with pytest.raises(ValueError, match=message):
        LoaderSettings(**settings)


def test_scanvi_has_no_device_backed_splitter():
    import scvi

    adata = scvi.data.synthetic_iid(batch_size=50, n_genes=20, n_batches=1)
    scvi.model.SCANVI.setup_anndata(adata, labels_key="labels", unlabeled_category="unknown")
    model = scvi.model.SCANVI(adata, n_hidden=8, n_latent=2)
    assert not supports_data_on_device(model)
    # Falls back to the host loader rather than handing SCANVI a splitter it cannot use.
    assert "datamodule" not in kwargs_for(LoaderSettings(data_on_device=True), model)


@pytest.mark.parametrize("on_device", [False, True])
def test_training_uses_the_loader_asked_for(scvi_model, on_device):
    loader = LoaderSettings(data_on_device=on_device)
    kwargs = {"max_epochs": 1, "accelerator": "cpu", "batch_size": 64, "train_size": 0.8}
    kwargs |= kwargs_for(loader, scvi_model, max_epochs=1)
    scvi_model.train(enable_progress_bar=False, logger=False, **kwargs)
    assert used_data_on_device(scvi_model) is on_device
    # The same train/validation split either way (scvi-tools' seeded permutation).
    assert len(scvi_model.train_indices) == 240 and len(scvi_model.validation_indices) == 60
