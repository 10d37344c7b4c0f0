# Two commands do all set-up on a fresh machine:
#   make run    # train the default (small) model and prune every task it solves
#   make test   # the test suite
# Both create .venv and install circuitlab with torch pinned by constraints.txt.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench tox clean

PLUGIN_PACKAGES := plugins/circuitlab-example plugins/circuitlab-rigl plugins/circuitlab-attribution

$(STAMP): pyproject.toml constraints.txt $(addsuffix /pyproject.toml,$(PLUGIN_PACKAGES))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]' $(addprefix -e ,$(PLUGIN_PACKAGES))
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/circuitlab run --sparsity topk --pruner hardconcrete --out out/run

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks plugins
	$(BIN)/lint-imports

# The maintainer matrix (tox.ini): each plugin package against the core, no plugins, the lowest
# supported dependency versions, and lint. Needs the package index for the lowest-versions env.
tox: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt 'tox>=4.22'
	$(BIN)/tox -e plugin-example,plugin-rigl,plugin-attribution,plugins-none,lowest,lint

bench: $(STAMP)
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/prune.py
	$(BIN)/python benchmarks/store.py

clean:
	rm -rf $(VENV) out runs .pytest_cache .tox
