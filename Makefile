# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# torch comes first and pinned: the CPU wheel of this machine; later installs see it satisfied.
TORCH   := torch==2.13.0
STAMP   := $(VENV)/.installed

.PHONY: demo test test-slow lint venv clean bench-trl-venv

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

# Speed benchmark against TRL (benchmarks/trl_speed.py): its own venv, never a dependency of e3rl.
# torch first (pinned, as above), then TRL pinned with e3rl editable in one resolution that keeps
# the same torch.
BENCH_VENV := .venv-bench
TRL        := trl==1.16.0

$(BENCH_VENV)/.installed: pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q $(TORCH)
	$(BENCH_VENV)/bin/python -m pip install -q $(TORCH) $(TRL) -e .
	touch $@

bench-trl-venv: $(BENCH_VENV)/.installed

clean:
	rm -rf $(VENV) runs .pytest_cache
