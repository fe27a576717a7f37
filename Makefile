# Every target sets up its own virtual environment first (Python 3.11+ only).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test lint typecheck check fuzz bench clean

$(BIN)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $@

serve: $(BIN)/.installed  ## run the server: SQLite + ./ipacs-data, http://127.0.0.1:8080
	$(BIN)/ipacs serve

test: $(BIN)/.installed  ## the whole test suite (IPACS_TEST_DATABASE_URL picks PostgreSQL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(BIN)/.installed
	$(BIN)/mypy

check: lint typecheck test

fuzz: $(BIN)/.installed  ## a long schemathesis run (CI runs a bounded one)
	IPACS_FUZZ_EXAMPLES=$${IPACS_FUZZ_EXAMPLES:-500} $(BIN)/python -m pytest -s tests/security/test_fuzz.py

bench: $(BIN)/.installed
	$(BIN)/python -m bench all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
