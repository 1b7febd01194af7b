# One-command set-up for users and CI. `make quickstart` runs the main job on the bundled
# defaults; `make test` runs the test suite, `make test-slow` its multi-process fault tests.
# Each creates .venv and installs what it needs.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist
CHROMIUM      := /usr/bin/chromium

.PHONY: install test-deps quickstart test test-slow clean

$(BIN)/archsearch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/archsearch

# Test-only system packages from Debian (nothing is downloaded at test time): Fashion-MNIST
# for the data tests and Chromium for the dashboard's browser tests. Skipped where apt is
# absent; the tests that need them then skip with a reason.
test-deps:
	@if { [ ! -d $(FASHION_MNIST) ] || [ ! -x $(CHROMIUM) ]; } && command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO apt-get install -y -qq dataset-fashion-mnist chromium >/dev/null; \
	fi

# The main job: a search over all six gates on scikit-learn's bundled digits, local Ray,
# MLflow store in ./mlflow.db. Then: archsearch pareto quickstart / archsearch ui quickstart.
quickstart: install
	$(BIN)/archsearch search search_spaces/quickstart.yaml

# Every test but those marked slow: real searches killed and resumed, cut off from their node
# or tracking server, on a two-node cluster, the UI in a browser, large torchvision models
# (~30-100 s each). CI runs both.
test: install test-deps
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not slow"

test-slow: install test-deps
	$(BIN)/pytest -q -m slow

clean:
	rm -rf $(VENV) runs ray_results mlruns mlflow.db .pytest_cache .ruff_cache
