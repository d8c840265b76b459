"""The data-loader levers (scvi_hub_workflow.loaders) become the right scvi-tools train() arguments,
and a model trained with them really drew its minibatches the way asked (on the CPU here)."""

from __future__ import annotations

import pytest
from scvi_hub_workflow.config import ConfigError, model_settings, resolve
from scvi_hub_workflow.loaders import (
    LoaderSettings,
    loader_train_kwargs,
    supports_device_loaders,
    used_data_on_device,
)
from scvi_hub_workflow.model_io import scvi_class
from scvi_hub_workflow.model_kinds import KINDS
from scvi_hub_workflow.training import train_model


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
        ({"persistent_workers": True}, "persistent_workers: needs num_workers > 0"),
        ({"data_on_device": True, "num_workers": 2}, "does not apply with data_on_device"),
        ({"data_on_device": True, "load_sparse_tensor": True}, "does not apply with"),
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
    assert not supports_device_loaders(model)
    # Falls back to the host loader rather than handing SCANVI a splitter it cannot use.
    assert kwargs_for(LoaderSettings(data_on_device=True), model) == {}
    assert kwargs_for(LoaderSettings(load_sparse_tensor=True), model) == {}


@pytest.mark.parametrize("on_device", [False, True])
def test_training_uses_the_loader_asked_for(scvi_model, on_device):
    loader = LoaderSettings(data_on_device=on_device)
    kwargs = {"max_epochs": 1, "accelerator": "cpu", "batch_size": 64, "train_size": 0.8}
    kwargs |= kwargs_for(loader, scvi_model, max_epochs=1)
    scvi_model.train(enable_progress_bar=False, logger=False, **kwargs)
    assert used_data_on_device(scvi_model) is on_device
    # The same train/validation split either way (scvi-tools' seeded permutation).
    assert len(scvi_model.train_indices) == 240 and len(scvi_model.validation_indices) == 60


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_registry_says_which_classes_train_through_the_plain_splitter(kind):
    # `device_loaders` in model_kinds must match the splitter scvi-tools trains the class with,
    # through the train() that takes a datamodule and load_sparse_tensor (TOTALVI's own train()
    # builds its plain splitter itself and takes neither)
    from scvi.dataloaders import DataSplitter
    from scvi.model.base import UnsupervisedTrainingMixin

    cls = scvi_class(KINDS[kind])
    uses_plain = cls._data_splitter_cls is DataSplitter
    assert (uses_plain and issubclass(cls, UnsupervisedTrainingMixin)) == KINDS[kind].device_loaders


# --- the config keys, through train_model ---------------------------------------------------


def model_config(model: dict | None = None, **train) -> dict:
    entry = {
        "dataset": {"source": "builtin:synthetic-iid"},
        "model": model or {"class": "SCVI", "params": {"n_hidden": 16, "n_latent": 4}},
        "train": {"max_epochs": 2, "early_stopping": False, "accelerator": "cpu", **train},
    }
    return {"models": {"m": entry}}


def test_loader_keys_default_to_scvi_tools_defaults():
    train = model_settings(model_config(), "m").train
    assert LoaderSettings.of(train) == LoaderSettings()


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"persistent_workers": True}, r"models\.m\.train\.persistent_workers: needs num_workers"),
        (
            {"data_on_device": True, "num_workers": 2},
            r"models\.m\.train\.num_workers: does not apply with data_on_device",
        ),
        ({"num_workers": -1}, r"num_workers"),
    ],
)
def test_contradicting_loader_keys_are_config_errors(train, message):
    with pytest.raises(ConfigError, match=message):
        resolve(model_config(**train))


def test_summary_records_throughput_device_and_loader():
    import scvi

    settings = model_settings(model_config(data_on_device=True), "m")
    adata = scvi.data.synthetic_iid(batch_size=100, n_genes=40)
    model, _, summary = train_model(adata, settings, cuda_available=False)
    assert used_data_on_device(model)
    (phase,) = summary["phases"]
    assert phase["data_on_device"] is True and phase["epochs"] == 2
    assert phase["training_cells"] == len(model.train_indices) == 180
    assert phase["cells_per_second"] == pytest.approx(180 * 2 / phase["seconds"], rel=0.01)
    assert summary["cells_per_second"] == phase["cells_per_second"]
    assert summary["loader"] == {
        "batch_size": 128,
        "pin_memory": False,
        "num_workers": 0,
        "persistent_workers": False,
        "data_on_device": True,
        "load_sparse_tensor": False,
    }
    assert summary["device"] == "cpu"


def test_scanvi_pretraining_gets_the_device_loader_and_scanvi_the_host_one():
    import scvi

    scanvi = {
        "class": "SCANVI",
        "from_scvi": True,
        "params": {"n_hidden": 16, "n_latent": 4},
        "setup": {"batch_key": "batch", "labels_key": "labels", "unlabeled_category": "unknown"},
    }
    settings = model_settings(model_config(scanvi, data_on_device=True, scvi_max_epochs=1), "m")
    adata = scvi.data.synthetic_iid(batch_size=100, n_genes=40)
    _, _, summary = train_model(adata, settings, cuda_available=False)
    assert [(p["phase"], p["data_on_device"]) for p in summary["phases"]] == [
        ("scvi", True),
        ("scanvi", False),
    ]
    assert all(p["cells_per_second"] > 0 for p in summary["phases"])
