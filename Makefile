# LaborNet — developer entry points. `make up` and `make test` install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVICES := jobs insurance brands rights
CONSOLE := services/console
PACKAGES := libs/shared $(addprefix services/,$(SERVICES)) $(CONSOLE)
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))
PROVINCES ?=
PROCESS_PER ?= node
PYTEST_ARGS ?=

.PHONY: install up test lint validate-deploy bench smoke broker clean help

help:
	@echo "make up      install, then run the nine-province federation on the embedded broker"
	@echo "make test    install, then run every test (real broker, SQLite and, if configured, PostgreSQL)"
	@echo "make lint    ruff, mypy, the offline deployment validations (scripts/validate-deploy.sh) and the AsyncAPI documents"
	@echo "make bench   benchmarks"
	@echo "make smoke   a three-province federation (node mode), the demo data, one story across nodes, then stop"

install: $(STAMP)

$(STAMP): $(PYPROJECTS) requirements-dev.txt constraints.txt tests/contract/requirements-generator.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -r requirements-dev.txt $(foreach p,$(PACKAGES),-e ./$(p))
	@# the OpenAPI client generator of tests/contract, in an environment of its own (see its requirements)
	$(PYTHON) -m venv $(VENV)/generator
	$(VENV)/generator/bin/pip install --quiet -r tests/contract/requirements-generator.txt
	touch $(STAMP)

up: install
	$(BIN)/labornet up --process-per $(PROCESS_PER) $(if $(PROVINCES),--provinces $(PROVINCES),)

broker: install
	$(BIN)/labornet broker

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check libs services tests benchmarks deploy/tools
	$(BIN)/ruff format --check libs services tests benchmarks deploy/tools
	$(BIN)/mypy
	scripts/validate-deploy.sh
	@# the AsyncAPI documents, by the AsyncAPI project's own parser (pinned in tools/asyncapi/package-lock.json)
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
	  [ -d tools/asyncapi/node_modules ] || npm ci --prefix tools/asyncapi --ignore-scripts --no-audit --no-fund; \
	  node tools/asyncapi/validate.mjs; \
	elif [ "$${LABORNET_ALLOW_MISSING_VALIDATORS:-0}" = 1 ]; then \
	  echo "SKIP  AsyncAPI documents: node not found (LABORNET_ALLOW_MISSING_VALIDATORS=1)"; \
	else \
	  echo "FAIL  AsyncAPI documents: node and npm not found (install them, or set LABORNET_ALLOW_MISSING_VALIDATORS=1 to skip)"; \
	  exit 1; \
	fi

validate-deploy: install
	scripts/validate-deploy.sh

# the search benchmark's PostgreSQL runs need a server: the local one when it answers, unless one is named
bench: install
	@if [ -z "$$LABORNET_BENCH_POSTGRES_URL" ] && command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then \
		export LABORNET_BENCH_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test; fi; \
	$(BIN)/python -m benchmarks

SMOKE_DIR ?= .labornet-smoke
smoke: install
	rm -rf $(SMOKE_DIR)
	$(BIN)/labornet up --provinces 510000,330000,320000 --data-dir $(SMOKE_DIR) --port-base 18000 \
	  --broker-port 19092 --process-per node --smoke

clean:
	rm -rf $(VENV) .labornet .labornet-smoke .pytest_cache .mypy_cache .ruff_cache
