# The two commands (see README.md): `make quickstart` and `make test`.
# Both create .venv when it is missing and install the exact pins first.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test venv clean-venv bench-retrieval bench-venv bench-rollout bench-train bench-sft-batching mini-table

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/masksearch quickstart

# pytest exits 5 when it collects nothing: say so, and keep the failure.
test: $(STAMP)
	@$(BIN)/python -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$rc

# MaskSearch's table in miniature (gin/runs/mini_masksearch_table.gin); rerun to resume.
mini-table: $(STAMP)
	$(BIN)/masksearch table

bench-retrieval: $(STAMP)
	$(BIN)/python benchmarks/retrieval.py

bench-train: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

bench-sft-batching: $(STAMP)
	$(BIN)/python benchmarks/sft_batching.py

# Benchmark-only venv for google-tunix (its pins clash with .venv's; see requirements-benchmarks.txt).
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): requirements-benchmarks.txt
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -r requirements-benchmarks.txt
	@touch $(BENCH_STAMP)

bench-venv: $(BENCH_STAMP)

bench-rollout: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python benchmarks/rollout.py

clean-venv:
	rm -rf $(VENV)
