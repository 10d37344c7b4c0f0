# Two commands do all set-up on a fresh machine:
#   make run    # train the default (small) model and prune every task it solves
#   make test   # the test suite
# Both create .venv and install circuitlab with torch pinned by constraints.txt.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench tox clean chromium view-demo

PLUGIN_PACKAGES := plugins/circuitlab-example plugins/circuitlab-rigl plugins/circuitlab-attribution
# Two small third-party packages the tests use: their names clash with circuitlab-example's and each other's.
TEST_PLUGIN_PACKAGES := tests/packages/circuitlab-outsider tests/packages/circuitlab-neighbour

TEST_STAMP := $(VENV)/.installed-test

$(STAMP): pyproject.toml constraints.txt $(addsuffix /pyproject.toml,$(PLUGIN_PACKAGES))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]' $(addprefix -e ,$(PLUGIN_PACKAGES))
	$(BIN)/python -m pip install --quiet --no-deps 'circuit-tracer==0.5.0'  # its graph schema and viewer only
	touch $(STAMP)

# The clashing test packages join the venv for the tests only (a `make run` before `make test` does not see them).
$(TEST_STAMP): $(STAMP) $(addsuffix /pyproject.toml,$(TEST_PLUGIN_PACKAGES))
	$(BIN)/python -m pip install --quiet --no-deps $(addprefix -e ,$(TEST_PLUGIN_PACKAGES))
	touch $(TEST_STAMP)

run: $(STAMP)
	$(BIN)/circuitlab run --sparsity topk --pruner hardconcrete --out out/run

# The viewer test opens pages in Debian's headless chromium; install it once when it is missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium; }

test: $(TEST_STAMP) chromium
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks plugins
	$(BIN)/lint-imports

# The maintainer matrix (tox.ini): each plugin package against the core, no plugins, the lowest
# supported dependency versions, and lint. Needs the package index for the lowest-versions env.
tox: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt 'tox>=4.22'
	$(BIN)/tox -e plugin-example,plugin-rigl,plugin-attribution,plugins-none,lowest,lint

# The circuit viewer on a real model: train DEMO_PRESET (resumable; reused once trained), prune two
# tasks with two pruners into one activation store, then write out/view/index.html (every circuit,
# each with its page in out/view/circuits/) and out/view/circuit.html (one circuit).
DEMO ?= out/view-demo
DEMO_PRESET ?= small
DEMO_TASKS ?= python:else_elif,single_double_quote
DEMO_PRUNERS ?= heaviside hardconcrete
DEMO_CIRCUIT ?= python.else_elif

$(DEMO)/model/model.safetensors: $(STAMP)
	$(BIN)/circuitlab train --preset $(DEMO_PRESET) --sparsity topk --out $(DEMO)/model --quiet \
		$(if $(wildcard $(DEMO)/model/checkpoint.safetensors),--resume)

view-demo: $(DEMO)/model/model.safetensors
	$(BIN)/circuitlab record --model $(DEMO)/model --tasks $(DEMO_TASKS) --corpus-windows 128 --quiet \
		--out $(DEMO)/store.zarr --overwrite
	for p in $(DEMO_PRUNERS); do \
		$(BIN)/circuitlab prune --model $(DEMO)/model --pruner $$p --tasks $(DEMO_TASKS) \
			--store $(DEMO)/store.zarr --out $(DEMO)/bench/$$p || exit 1; done
	$(BIN)/circuitlab view --bench $(DEMO)/bench --store $(DEMO)/store.zarr --out out/view/index.html
	$(BIN)/circuitlab view $(DEMO)/bench/$(firstword $(DEMO_PRUNERS))/circuits/$(DEMO_CIRCUIT).json \
		--store $(DEMO)/store.zarr --out out/view/circuit.html

bench: $(STAMP)
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/prune.py
	$(BIN)/python benchmarks/store.py --model small

clean:
	rm -rf $(VENV) out runs .pytest_cache .tox
