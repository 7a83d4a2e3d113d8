# lit_dl: `make train` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch/torchvision pinned to the releases this project is tested with.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
ARGS ?=

.PHONY: install train test bench lint format clean

install: $(STAMP)

# Re-installs only when the venv is missing or pyproject.toml changed since the last install.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS) -e '.[dev,export]'
	touch $(STAMP)

train: install
	$(BIN)/lit-dl train $(ARGS)

# Tests in parallel on every core (pytest-xdist; a file's tests stay in one process).
test: install
	$(BIN)/python -m pytest -q -n auto --dist loadfile $(ARGS)

# Training speed of lit_dl against a plain PyTorch loop and the ideal loop, every model family
# (~9 minutes on 2 CPU cores); e.g. make bench ARGS="--accelerator gpu --json speed.json".
bench: install
	$(BIN)/python benchmarks/speed.py $(ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks scripts examples
	$(BIN)/ruff format --check src tests benchmarks scripts examples

format: install
	$(BIN)/ruff format src tests benchmarks scripts examples
	$(BIN)/ruff check --fix src tests benchmarks scripts examples

clean:
	rm -rf logs .pytest_cache .ruff_cache
