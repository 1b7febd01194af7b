# One-command set-up for users and CI. `make quickstart` runs the main job on the bundled
# defaults; `make test` runs the test suite. Both create .venv and install what they need.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data quickstart test lint clean

$(BIN)/archsearch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/archsearch

# Fashion-MNIST from Debian's package (no download at run time); skipped where apt is absent.
data:
	@if [ ! -d $(FASHION_MNIST) ] && command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

quickstart: install
	$(BIN)/archsearch train --model mlp --model-option 'hidden=[64,32]' --data digits \
	  --gate hard_concrete --granularity neuron --lambda 0.05 --epochs 10 --finetune-epochs 2 \
	  --out runs/quickstart

test: install data
	$(BIN)/ruff check .
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
