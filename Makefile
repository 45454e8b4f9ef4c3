# One command each: `make run` serves both services, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(shell find protos -name '*.proto')
GEN_STAMP := exchange/.generated
# The contract as last released: `make lint` fails on any change that breaks its clients.
RELEASED_CONTRACT := protos/released.binpb
# Every package pinned with its hashes (make lock): the image's, and the image's plus dev tools.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
SBOM ?= build/sbom.cdx.json
IMAGE_ENV ?= build/image-env

.PHONY: setup lock sbom proto contract-release run test lint unit mutants pgbouncer previous-release chaos bench clean compose-env compose-up compose-e2e compose-down test-containers

setup: $(GEN_STAMP) $(VENV)/bin/promtool

# Every package comes from the lock, each file checked against its hashes (pip itself and the
# build backend too, so nothing is fetched unchecked); then the project, editable, whose
# dependencies the lock already holds. Packages the lock no longer holds go first: a replaced
# one may share files with its successor (grpc-stubs and types-grpcio both own grpc-stubs/).
$(VENV)/.deps: pyproject.toml $(LOCK) $(DEV_LOCK)
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || (echo "Python 3.11+ required" && exit 1)
	$(PYTHON) -m scripts.lockfiles check
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m scripts.lockfiles strays $(DEV_LOCK) | xargs -r $(PY) -m pip uninstall -q -y
	$(PY) -m pip install -q --require-hashes -r $(DEV_LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Re-resolve pyproject.toml into both lock files: after changing a dependency, or after a merge
# (a conflicted lock is taken as ours and re-resolved). Pins that still fit are kept;
# LOCK_ARGS go to pip-compile, e.g. LOCK_ARGS=--upgrade or LOCK_ARGS="-P protobuf".
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c 'import piptools' 2>/dev/null || \
		$(PY) -m pip install -q "$$(grep -o 'pip-tools==[^"]*' pyproject.toml)"
	$(PY) -m scripts.lockfiles lock $(LOCK_ARGS)

# The software bill of materials of what the image installs (CycloneDX JSON, a build artifact):
# taken from an environment installed as the Dockerfile installs the image, the locked packages
# checked against their hashes, then the project without dependencies.
# Built again only when what the image installs changes.
SOURCES := $(shell find shared order_service wallet_pool_service -type f \( -name '*.py' -o -name '*.sql' \))
sbom: $(SBOM)
$(SBOM): $(LOCK) pyproject.toml $(GEN_STAMP) $(SOURCES)
	rm -rf $(IMAGE_ENV)
	$(PY) -m venv --without-pip $(IMAGE_ENV)
	$(PY) -m pip --python $(IMAGE_ENV)/bin/python install -q --require-hashes -r $(LOCK)
	$(PY) -m pip --python $(IMAGE_ENV)/bin/python install -q --no-deps --no-build-isolation .
	mkdir -p $(dir $(SBOM))
	$(VENV)/bin/cyclonedx-py environment --pyproject pyproject.toml --output-reproducible \
		--output-file $(SBOM) $(IMAGE_ENV)/bin/python

# Generated code is a package of its own (`exchange`), produced from protos/ and never edited.
# The project is reinstalled afterwards so the editable install maps the new package.
$(GEN_STAMP): $(PROTOS) $(VENV)/.deps
	rm -rf exchange
	mkdir -p exchange
	$(PY) -m grpc_tools.protoc -I protos \
		--python_out=. --grpc_python_out=. \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
		--mypy_out=. --mypy_grpc_out=. $(PROTOS)
	find exchange -type d -exec touch {}/__init__.py \;
	touch exchange/py.typed
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

proto: $(GEN_STAMP)

# promtool checks the alert rules and runs their unit tests (make test). It is on neither
# PyPI nor npm; Debian's prometheus package ships it, and only that binary is taken from it.
$(VENV)/bin/promtool: $(VENV)/.deps
	rm -rf .promtool && mkdir .promtool
	cd .promtool && apt-get download -q prometheus
	dpkg -x .promtool/prometheus_*.deb .promtool/root
	cp .promtool/root/usr/bin/promtool $@
	rm -rf .promtool

# Cut a release of the contract: what clients now rely on becomes the baseline for `buf breaking`.
contract-release: $(VENV)/.deps
	$(VENV)/bin/buf build --exclude-source-info -o $(RELEASED_CONTRACT)
	$(PY) -m tests.schema_catalog > protos/released_schema.txt

run: setup
	$(PY) -m scripts.run_local

MIGRATIONS = order_service/migrations/*.sql wallet_pool_service/migrations/*.sql

# squawk's findings are fixed or allowed with a reason in .squawk.toml (applied files are
# excluded there one by one: when every file is, nothing is left to match, and that is fine).
lint: setup
	$(VENV)/bin/buf lint
	$(VENV)/bin/squawk --config .squawk.toml --no-error-on-unmatched-pattern $(MIGRATIONS)
	$(VENV)/bin/buf breaking --against $(RELEASED_CONTRACT)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest tests/unit -q

# pytest, then the mutation suite, then the end-to-end suite against containers; where no
# engine can run, one line says so and how many tests did not run there (the rest has passed by then).
test: lint $(SBOM) pgbouncer previous-release
	$(PY) -m pytest -q
	$(PY) -m tests.mutation
	$(PY) -m scripts.containers --optional

# The mutation suite (tests/mutation/): one bug at a time seeded into a copy of the tree, and
# the checks named for it must fail (about 3 minutes); `make mutants MUTANTS="name ..."` for some.
mutants: setup
	$(PY) -m tests.mutation $(MUTANTS)

# The previous release (the commit that cut protos/released.binpb), installed from its own lock
# under .data/releases/ once, for the upgrade test (tests/e2e/test_upgrade.py).
previous-release: setup
	$(PY) -m tests.releases

# The end-to-end suite against containers of the image, from a fresh clone (README
# "Containers"): an engine (Debian's, started here if none answers and we are root), Compose v2,
# the images built with no registry, the compose stack on loopback ports, torn down at the end,
# also on failure or Ctrl-C. Host ports: POSTGRES_PORT, ORDER_PORT, POOL_PORT,
# ORDER_METRICS_PORT, POOL_METRICS_PORT (defaults 55432, 55051, 55052, 55451, 55452);
# TEST_CONTAINERS_ARGS go to pytest (e.g. "tests/e2e/test_watch.py -x").
test-containers: setup $(SBOM)
	$(PY) -m scripts.containers $(TEST_CONTAINERS_ARGS)

# PgBouncer from Debian's package, for the tests that run both services behind it; installed
# when missing (as root: on developer machines and in CI this is root).
pgbouncer:
	@if command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer; \
	else \
		echo "PgBouncer is needed by the tests: install the pgbouncer package (as root)"; exit 1; \
	fi

# A long chaos run (kills both services, restarts PostgreSQL) and its report; CHAOS_SEED replays.
# CHAOS_MODE=failover: PostgreSQL's primary is killed and its standby promoted, again and again.
CHAOS_SECONDS ?= 300
CHAOS_MODULE = $(if $(filter failover,$(CHAOS_MODE)),tests.chaos.failover,tests.chaos)
chaos: setup
	$(PY) -m $(CHAOS_MODULE) --seconds $(CHAOS_SECONDS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

# The benchmark suite (bench/README.md); BENCH_QUICK=1 for a short run while developing.
bench: setup
	$(PY) -m bench

# Secrets for docker compose, generated once into .env (never committed).
compose-env: setup
	$(PY) -m scripts.compose_env

compose-up: compose-env
	docker compose up --build --detach --wait

# The end-to-end suite against the running compose stack, by address.
compose-e2e: compose-env
	set -a && . ./.env && set +a && \
	E2E_ORDER_ADDR=localhost:$${ORDER_PORT:-50051} E2E_WALLET_POOL_ADDR=localhost:$${POOL_PORT:-50052} \
	E2E_DATABASE_URL=postgresql://postgres:$$POSTGRES_PASSWORD@localhost:$${POSTGRES_PORT:-5432}/exchange \
	$(PY) -m pytest tests/e2e -q

compose-down:
	docker compose down

clean:
	rm -rf exchange .pytest_cache .mypy_cache .ruff_cache *.egg-info
