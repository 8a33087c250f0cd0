# The two commands a new user needs: `make demo` and `make test`. Both set up .venv first if needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TINY   := outputs/tiny-model
# The demo and the tests never touch the network (the Hub client included).
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup demo test lint format clean

setup: $(STAMP)

# CPU torch is pinned (an unpinned torch pulls a multi-GB CUDA build); on a GPU machine install your
# torch first, then `pip install -e .`.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test,lint]"
	@touch $(STAMP)

$(TINY)/config.json: $(STAMP)
	$(OFFLINE) $(BIN)/inversecoder make-tiny-model $(TINY)

demo: $(STAMP) $(TINY)/config.json
	$(OFFLINE) $(BIN)/inversecoder run configs/demo.yaml

test: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest -q

# ruff (lint + format check) and mypy, as configured in pyproject.toml; CI runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf outputs
