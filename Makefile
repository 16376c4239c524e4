# dbinit_pipeline: everything installs into .venv from Python 3.11+ and the package registries.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo ui test unit lint typecheck check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## make demo: initialize the dev environment on the embedded PostgreSQL and print the response
demo: $(STAMP)
	@$(BIN)/dbinit init dev

## make ui: dagster-webserver on 127.0.0.1:3000 (or DAGSTER_WEBSERVER_PORT) and dagster-daemon, instance on
## the embedded PostgreSQL (or DAGSTER_PG_URL); Ctrl-C stops both and the embedded server
ui: $(STAMP)
	$(BIN)/python -m dbinit_pipeline.orchestration.instance

# Debian's Chromium for the UI test: Playwright drives it through executable_path.
/usr/bin/chromium:
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium

# Better Auth from npm for its tests, pinned by examples/better-auth/package-lock.json (git-ignored
# node_modules); without npm those tests are skipped and say why.
BETTER_AUTH := examples/better-auth/node_modules/.package-lock.json
$(BETTER_AUTH): examples/better-auth/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix examples/better-auth --no-audit --no-fund; \
	else echo "npm not found: the Better Auth tests will be skipped"; fi

## make test: install the test extra and run the whole suite
test: $(TEST_STAMP) /usr/bin/chromium $(BETTER_AUTH)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

## make unit: the pure tests (no server, no Dagster run), in seconds
unit: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not server"

## make lint: ruff, and the layers contract of pyproject.toml (import-linter)
lint: $(TEST_STAMP)
	$(BIN)/ruff check dbinit_pipeline dbinit_pipeline_tests
	$(BIN)/ruff format --check dbinit_pipeline dbinit_pipeline_tests
	$(BIN)/lint-imports

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) .dbinit *.egg-info

## make bench: dbinit against psql -1 (the floor), dbmate, alembic and the bare Dagster job on one embedded
## PostgreSQL in bench/out/; prints the table and updates BENCHMARKS.md (quick: make bench BENCH_SIZES=50x4 BENCH_RUNS=3)
BENCH_SIZES ?= 50x4 500x4
BENCH_RUNS ?= 3
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m bench.run --sizes "$(BENCH_SIZES)" --runs $(BENCH_RUNS) --write BENCHMARKS.md
