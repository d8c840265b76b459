# Two commands for a new user (see README.md):
#   make run    set up .venv and run the default workflow on built-in data
#   make test   set up .venv and run the tests (what CI runs)
#   make test-fast  the unit tests only (no end-to-end runs, no SLURM)
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup run test test-fast lint format

setup: $(VENV)/.installed

# torch first and pinned, so pip never resolves a newer (CUDA-sized) build on its own.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

run: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow and not slurm"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/snakefmt --check Snakefile workflow && $(BIN)/snakemake --lint

format: setup
	$(BIN)/ruff check --fix . && $(BIN)/ruff format . && $(BIN)/snakefmt Snakefile workflow
