# Every target bootstraps .venv itself: a fresh clone needs nothing but python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEV_STAMP := $(VENV)/.dev-installed
RUN_STAMP := $(VENV)/.run-installed
BENCH_STAMP := $(VENV)/.bench-installed
MUTATE_STAMP := $(VENV)/.mutate-installed

.PHONY: run test lint format protos sdk docs bench clean soak fuzz
.PHONY: image image-test mutate

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# `make run` installs the server's runtime dependencies only; the other targets the dev tools.
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,plot]'
	touch $@

$(BENCH_STAMP): $(DEV_STAMP)
	$(BIN)/pip install -q -e '.[dev,plot,bench]'
	touch $@

$(MUTATE_STAMP): $(DEV_STAMP)
	$(BIN)/pip install -q -e '.[dev,plot,mutate]'
	touch $@

run: $(RUN_STAMP)
	$(BIN)/gradserve serve --host 127.0.0.1 --port 50051

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(DEV_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -q

protos: $(DEV_STAMP)
	$(BIN)/python scripts/gen_protos.py

sdk: $(DEV_STAMP)
	$(BIN)/python scripts/gen_sync_client.py

docs: $(DEV_STAMP)
	$(BIN)/python scripts/gen_sdk_ops.py
	$(BIN)/python scripts/gen_operators_doc.py
	$(BIN)/python scripts/gen_settings_doc.py

# The load and fault tests of tests/load for SOAK_SECONDS each (make test runs them for seconds).
SOAK_SECONDS ?= 600
soak: $(DEV_STAMP)
	LOAD_SECONDS=$(SOAK_SECONDS) $(BIN)/python -m pytest -q -s -p no:cacheprovider \
		-o timeout=$$(( $(SOAK_SECONDS) * 3 + 300 )) tests/load

# The fuzz tests of tests/fuzz for FUZZ_SECONDS each (two tests: 10 minutes in all; make test
# runs them for seconds).
FUZZ_SECONDS ?= 300
fuzz: $(DEV_STAMP)
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(BIN)/python -m pytest -q -s -p no:cacheprovider \
		-o timeout=$$(( $(FUZZ_SECONDS) * 2 + 300 )) tests/fuzz

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

# The container image, built from a debootstrap base (no registry of base images needed;
# see docs/operations.md), and run as Kubernetes runs it. Needs root and dockerd
# (.ci/dockerd.sh start starts one); not part of `make test`.
IMAGE ?= gradserve:test

image:
	bash deploy/docker/build-offline.sh $(IMAGE)

image-test: $(DEV_STAMP) image
	GRADSERVE_IMAGE=$(IMAGE) $(BIN)/python -m pytest -q -m image tests/deploy/test_image.py

# mutmut over the modules that guard users, each with its fast unit tests (docs/mutation.md);
# `make mutate MODULES="gradserve/rpc/auth.py"` runs some of them. Not part of `make test`.
mutate: $(MUTATE_STAMP)
	bash scripts/mutate.sh $(MODULES)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
