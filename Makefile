# Two commands do all set-up on a fresh machine:
#   make run    # train the default (small) model and prune every task it solves
#   make test   # the test suite
# Both create .venv and install circuitlab with torch pinned by constraints.txt.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean chromium view-demo

$(STAMP): pyproject.toml constraints.txt plugins/circuitlab-example/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]' -e plugins/circuitlab-example
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/circuitlab run --sparsity topk --pruner hardconcrete --out out/run

# The viewer test opens pages in Debian's headless chromium; install it once when it is missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium; }

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks plugins
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/prune.py
	$(BIN)/python benchmarks/store.py

clean:
	rm -rf $(VENV) out runs .pytest_cache
