"""Versions of the libraries that shape a model file, as recorded on the card."""

from importlib.metadata import version


def versions() -> dict[str, str]:
    return {name: version(dist) for name, dist in [("scvi", "scvi-tools"), ("anndata", "anndata")]}
