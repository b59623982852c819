# bioscale — the two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= ./bioscale-demo

.PHONY: demo test lint unit cluster-tests venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/bioscale demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check platform tests jobs benchmarks
	$(BIN)/ruff format --check platform tests jobs benchmarks

# Two phases: tests that start their own Ray cluster (marker `cluster`) run first, each in its own
# process tree; then everything that shares one local Ray instance. The shared phase runs last so
# its summary is the suite's closing line.
cluster-tests: $(STAMP)
	@if grep -rqs "pytest.mark.cluster" tests; then \
		$(BIN)/python -m pytest -m cluster; \
	else echo "cluster phase: no tests marked 'cluster' yet, skipped"; fi

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not cluster and not gpu"

test: lint cluster-tests unit

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
