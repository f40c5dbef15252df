# One venv per checkout; every target installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test check lint typecheck histories screenshots clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/transfer dev

test: install check
	$(BIN)/pytest -q

check: install lint typecheck

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy .

# The console's screenshots in docs/ (the README shows them), taken by the browser tests.
screenshots: install
	TRANSFER_SCREENSHOTS=docs $(BIN)/pytest -q tests/console

# Record the histories of a new workflow version for the replay test (never overwrites a version).
histories: install
	$(BIN)/python -m tests.histories.record $(VERSION)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
