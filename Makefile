# One venv per checkout; every target installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test check lint typecheck histories screenshots bench chaos clean

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

# The benchmark (bench/run.py): one table, also written to build/bench.json. BENCH_N, BENCH_PARKED,
# BENCH_PROBE and BENCH_LATENCY_SAMPLES choose smaller sizes for a quick run.
bench: install
	$(BIN)/python -m bench.run

# The fault and abuse suite (chaos/run.py) on the real stack with PostgreSQL: one table, also written to
# build/chaos.json; at most 15 minutes. CHAOS_* choose smaller sizes, CHAOS_ONLY some groups.
chaos: install
	$(BIN)/python -m chaos.run

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
