# catsdogs: `make run` trains on the embedded sample, `make test` runs lint and the test suite.
# Both create the virtual environment and install the pinned dependencies first.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Optional local copy of Keras' pretrained weight files, for machines without internet.
# Where it is missing, Keras downloads the weights itself on first use.
PRETRAINED_WEIGHTS_DIR ?= ../shared/weights
KERAS_CACHE := $(or $(KERAS_HOME),$(HOME)/.keras)/models

.PHONY: run test lint install weights clean

run: install weights
	$(BIN)/catsdogs train

test: install weights lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

weights:
	@if [ -d "$(PRETRAINED_WEIGHTS_DIR)" ]; then \
		mkdir -p "$(KERAS_CACHE)" && cp -n "$(PRETRAINED_WEIGHTS_DIR)"/*.h5 "$(KERAS_CACHE)/" && \
		echo "Keras cache seeded from $(PRETRAINED_WEIGHTS_DIR)"; fi

# Regenerate requirements.lock after changing a pin in pyproject.toml.
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
