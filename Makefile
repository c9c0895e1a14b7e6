# The few targets people type. Everything installs into .venv with the pinned versions.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system demo test lint bench lock clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[quality,airflow,postgres,dev]'
	touch $(STAMP)

install: $(STAMP)

system:
	bash scripts/system-deps.sh

demo: install system
	$(BIN)/python scripts/demo.py

test: install system
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check exchange validators dags tests benchmarks scripts
	$(BIN)/ruff format --check exchange validators dags tests benchmarks scripts
	$(BIN)/mypy exchange validators

bench: install system
	$(BIN)/python benchmarks/exchange_throughput.py
	$(BIN)/python benchmarks/memory_peak.py

lock: install
	{ grep '^#' requirements.lock; $(BIN)/python -m pip freeze --exclude-editable | grep -v exchange-gateway; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf .demo build *.egg-info .pytest_cache .ruff_cache
