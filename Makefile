# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv when missing and
# installs the package with the pinned CPU constraints once (a stamp file makes reruns skip it).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.chimed-installed
CONSTRAINTS := constraints/cpu.txt
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test lint format install clean

$(STAMP): setup.cfg setup.py pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch would pull several GB of CUDA wheels.
	$(PY) -m pip install -q -c $(CONSTRAINTS) torch==2.13.0
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[deepspeed,eval,serving,dev]"
	touch $(STAMP)

install: $(STAMP)

# make demo DEMO_ARGS="--from sft" reruns from a stage; DEMO_ARGS=--dry-run prints the commands.
demo: $(STAMP)
	$(PY) -m chimed_trl.pipeline --config recipes/tiny/pipeline.yaml --output_dir runs/demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest -q -n auto --dist loadfile tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

clean:
	rm -rf runs .pytest_cache
