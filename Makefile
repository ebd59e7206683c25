# gridgov: `make run` and `make test` do all set-up on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
HOST   ?= 127.0.0.1
PORT   ?= 8000
WORKERS ?= 1
PYTEST_ARGS ?=
BENCH_ARGS ?=
NOTEBOOK_PORT ?= 8001
OS_PACKAGES := postgresql-15 postgresql-15-postgis-3 gdal-bin python3-venv python3-qgis chromium \
               fonts-wqy-microhei
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BIN := $(VENV)/bin

export HOST PORT WORKERS

.PHONY: help deps os-deps py-deps run serve db test lint bench bench-ogc bench-changes bench-raster stop reset-db clean notebook

help:
	@echo "make run       install what is missing, start the local PostGIS, migrate, seed, serve on http://$(HOST):$(PORT) (WORKERS=N processes)"
	@echo "make test      the same set-up, then every test against a real PostGIS"
	@echo "make stop      stop the project's local PostgreSQL cluster"
	@echo "make reset-db  drop the local database and seed the demo town again"
	@echo "make lint      ruff and the import-direction contracts"
	@echo "make notebook  JupyterLab on notebooks/ in the project's venv, on the demo database (a server on NOTEBOOK_PORT=$(NOTEBOOK_PORT) for the OGC API cells)"
	@echo "make bench     /locate throughput next to the same SQL from psycopg (a throwaway cluster, ~2 min)"
	@echo "make bench-changes  orthophoto change detection: scores vs plain differencing, speed vs the bare read, peak memory at 1 and 4 GB (~1 h)"
	@echo "make bench-raster  raster tile rendering next to the bare rasterio read of the same windows (~1 min)"
	@echo "make bench-ogc OGC API items, item and tiles next to raw SQL, tipg and pygeoapi (~12 min; peers install into .data/bench-peers-venv once)"

deps: os-deps py-deps

# OS packages: installed only when missing (with sudo when not root).
os-deps:
	@missing=""; for p in $(OS_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing OS packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Python packages: the pinned set in requirements.lock, into .venv, when it changed.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

py-deps: $(VENV)/.installed

db: deps
	$(BIN)/gridgov db up

run: deps
	$(BIN)/gridgov serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

serve: run

test: deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Planners' notebooks: Jupyter (the optional extra `notebook`, kept to the pinned set) is
# installed only here; a server on NOTEBOOK_PORT sets up the demo data (coverage, events)
# and answers the OGC API cells; Jupyter gets the database URL and the OGC API root.
notebook: deps
	@[ -x $(BIN)/jupyter-lab ] || $(BIN)/python -m pip install -q -c requirements.lock -e '.[notebook]'
	@set -e; \
	$(BIN)/gridgov serve --host 127.0.0.1 --port $(NOTEBOOK_PORT) & srv=$$!; \
	trap 'kill $$srv 2>/dev/null || true' EXIT INT TERM; \
	until $(BIN)/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$(NOTEBOOK_PORT)/healthz', timeout=2)" 2>/dev/null; do \
	  kill -0 $$srv 2>/dev/null || { echo "the server on port $(NOTEBOOK_PORT) stopped (see above)"; exit 1; }; \
	  sleep 2; \
	done; \
	GRIDGOV_DATABASE_URL="$$($(BIN)/gridgov db url)" GRIDGOV_OGC_URL="http://127.0.0.1:$(NOTEBOOK_PORT)/ogc" \
	GRIDGOV_SURFACE_MODEL="$${GRIDGOV_SURFACE_MODEL:-$$(realpath -m "$${GRIDGOV_DATA_DIR:-.data}/dsm.tif")}" \
	  $(BIN)/jupyter lab --notebook-dir=notebooks $(if $(SUDO),,--allow-root) $(JUPYTER_ARGS)

lint: py-deps
	$(BIN)/ruff check gis layers tiles api seed_data bench tests
	$(BIN)/lint-imports

bench: deps
	$(BIN)/python -m bench.locate $(BENCH_ARGS)

bench-ogc: deps
	$(BIN)/python -m bench.ogc $(BENCH_ARGS)

bench-changes: deps
	$(BIN)/python -m bench.changes $(BENCH_ARGS)

bench-raster: deps
	$(BIN)/python -m bench.raster $(BENCH_ARGS)

stop: py-deps
	$(BIN)/gridgov db stop

reset-db: deps
	$(BIN)/gridgov db reset --yes

clean: stop
	rm -rf .data
