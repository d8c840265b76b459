"""Library behind the scvi-hub workflow: every rule script calls one function from here."""

from .job_env import skip_jax_in_scvi

# Every job imports this package before scvi-tools; only the integration job needs jax.
skip_jax_in_scvi()
