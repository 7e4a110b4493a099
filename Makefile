# catsdogs: `make run` trains on the embedded sample, `make test` runs lint and the test suite.
# Both create the virtual environment and install the pinned dependencies first.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Optional local copy of Keras' pretrained weight files, for machines without internet.
# Where it is missing, Keras downloads the weights itself on first use.
PRETRAINED_WEIGHTS_DIR ?= ../shared/weights
KERAS_CACHE := $(or $(KERAS_HOME),$(HOME)/.keras)/models
# `make loadtest`: locust against a running service (loadtests/README.md), e.g.
# make loadtest HOST=http://127.0.0.1:3000 USERS=20 SPAWN_RATE=5 DURATION=60s [PHOTOS=data/sample]
# An environment $HOST that is not a URL (zsh and tcsh set it to the machine name) is ignored.
HOST ?= http://127.0.0.1:3000
ifeq ($(origin HOST)$(filter http://% https://%,$(HOST)),environment)
HOST := http://127.0.0.1:3000
endif
USERS ?= 20
SPAWN_RATE ?= 5
DURATION ?= 60s
# Folder with cat/ and dog/ photos; empty: ../shared/datasets/catsdogs if present, else data/sample.
PHOTOS ?=
LOADTEST_REPORTS ?= reports/loadtest
# Further locust or locustfile options, e.g. LOCUST_ARGS="--max-p95-ms 300 --wait-min 0.5".
LOCUST_ARGS ?=

# `make benchmark`: the serving benchmark (benchmarks/README.md) on a trained model.
MODEL ?= catsdogs:latest
BENCHMARK_PHOTOS ?= $(or $(wildcard ../shared/datasets/catsdogs),data/sample)

.PHONY: run test lint install weights clean loadtest benchmark soak lock

run: install weights
	$(BIN)/catsdogs train

test: install weights lint
	$(BIN)/pytest

# Every import is a declared dependency of the part that imports it (pyproject.toml): the
# serving code (catsdogs/, service.py) only of the runtime dependencies, the training code of
# those and the training extra, the tests and tools of any.
DEPTRY_SKIP := \.venv|\.git|data|deploy|mlruns
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/deptry . -e '$(DEPTRY_SKIP)|training|tests|benchmarks|loadtests|scripts' \
		--optional-dependencies-dev-groups training,dev
	$(BIN)/deptry . -e '$(DEPTRY_SKIP)|tests|benchmarks|loadtests|scripts' \
		--optional-dependencies-dev-groups dev
	$(BIN)/deptry . -e '$(DEPTRY_SKIP)' --ignore DEP002,DEP004

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

loadtest: install
	mkdir -p $(LOADTEST_REPORTS)
	$(BIN)/locust -f loadtests/locustfile.py --headless --host $(HOST) \
		-u $(USERS) -r $(SPAWN_RATE) -t $(DURATION) $(if $(PHOTOS),--photos "$(PHOTOS)") \
		--csv $(LOADTEST_REPORTS)/locust --html $(LOADTEST_REPORTS)/locust.html --only-summary \
		$(LOCUST_ARGS)

benchmark: install weights
	$(BIN)/python benchmarks/serving.py run --model $(MODEL) --photos $(BENCHMARK_PHOTOS) \
		--out reports/benchmark

# `make soak`: 10 minutes of steady load at 70 % of the measured saturation (benchmarks/soak.py).
soak: install weights
	$(BIN)/python benchmarks/soak.py --model $(MODEL) --photos $(BENCHMARK_PHOTOS) \
		--out reports/benchmark

# Regenerate requirements.lock after changing a pin in pyproject.toml.
lock: install
	$(BIN)/uv pip compile pyproject.toml --all-extras --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
