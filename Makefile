# The few targets people type. Everything installs into .venv with the pinned versions.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The bootstrap tools a new venv brings (pip 23.2, setuptools 65.5 with Python 3.11) have
# published advisories: every venv is moved to these fixed releases before anything else.
BOOTSTRAP := pip==26.3 setuptools==84.2.1
# pip-audit lives in its own venv: the auditor is not part of what it audits, and its own
# dependencies need not resolve against the gateway's lock.
AUDIT_VENV := build/audit-venv
PIP_AUDIT := pip-audit==2.10.1

.PHONY: install system demo test test-fast lint bench lock audit-deps clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(BOOTSTRAP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[quality,airflow,postgres,celery,s3,dev]'
	$(BIN)/python scripts/vendor_frontend.py
	touch $(STAMP)

install: $(STAMP)

system:
	bash scripts/system-deps.sh

demo: install system
	$(BIN)/python scripts/demo.py

# The whole suite: both lanes, the unit tests and the integration tests against real servers
# (tests/conftest.py decides which test is in which lane).
test: install system
	$(BIN)/python -m pytest

# The unit lane only: no server, no browser, no subprocess CLI runs; about a minute.
test-fast: install
	$(BIN)/python -m pytest -m "not integration"

lint: install
	$(BIN)/ruff check exchange exchange_airflow validators dags tests benchmarks scripts
	$(BIN)/ruff format --check exchange exchange_airflow validators dags tests benchmarks scripts
	$(BIN)/mypy exchange exchange_airflow validators
	$(BIN)/python -m exchange.contract.vocabulary.generate --check

bench: install system
	$(BIN)/python benchmarks/exchange_vs_raw.py
	$(BIN)/python benchmarks/validation_floor.py
	$(BIN)/python benchmarks/exchange_throughput.py
	$(BIN)/python benchmarks/memory_peak.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/ledger_history.py
	$(BIN)/python benchmarks/sftp_throughput.py

lock: install
	{ grep '^#' requirements.lock; $(BIN)/python -m pip freeze --exclude-editable | grep -v exchange-gateway; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

# pip-audit over the lock and the bootstrap pins: exit 1 on findings, 2 when the vulnerability
# database is unreachable or silent for some package (never a false "clean").
audit-deps: $(AUDIT_VENV)/.installed
	$(AUDIT_VENV)/bin/python scripts/audit_deps.py $(AUDIT_VENV)/bin/pip-audit requirements.lock $(BOOTSTRAP)

$(AUDIT_VENV)/.installed: Makefile
	test -x $(AUDIT_VENV)/bin/python || $(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install -q --disable-pip-version-check $(BOOTSTRAP)
	$(AUDIT_VENV)/bin/python -m pip install -q --disable-pip-version-check $(PIP_AUDIT)
	touch $@

clean:
	rm -rf .demo build *.egg-info .pytest_cache .ruff_cache $(AUDIT_VENV)
