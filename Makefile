# A newcomer's entry points: `make run` starts everything on the embedded default,
# `make test` runs the suite. Both create the virtual environment on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PYTEST_ARGS ?=
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check
# `make lock PIP_COMPILE_ARGS="--upgrade-package NAME"` moves one package.
PIP_COMPILE_ARGS ?=
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --strip-extras \
	--allow-unsafe --no-emit-index-url --no-emit-find-links $(PIP_COMPILE_ARGS)

.PHONY: venv run test soak lint fmt bench lock smoke up down migrate seed logs clean

# One virtualenv in two layers: the runtime (requirements.txt) is all `make run` installs; test,
# lint and bench add the tools (requirements-dev.txt) on top. A changed requirements.txt rebuilds
# the virtualenv from scratch, so that nothing dropped from the lock lingers in it.
$(VENV)/.runtime: requirements.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP_INSTALL) -r requirements.txt -r requirements-dev.txt
	touch $@

venv: $(VENV)/.dev  ## the virtualenv with the test and lint tools

run: $(VENV)/.runtime  ## migrate, seed an empty database, start web + worker + beat
	./scripts/run

test: venv  ## pytest on DATABASE_URL / REDIS_URL, or the embedded default when unset
	$(BIN)/pytest $(PYTEST_ARGS)

# Fuzzing, faults and load against the whole service as real processes (soak/; a few minutes).
# Needs DATABASE_URL=postgres://... (it creates and drops its own databases on that server) and
# redis-server and PostgreSQL's server programs on the machine (it starts its own).
soak: venv  ## schemathesis, worker kills, Redis/PostgreSQL restarts and load, real processes
	$(BIN)/pytest -m soak soak $(PYTEST_ARGS)

# A lock file that comes out the same keeps its timestamp, so that the virtualenv is not rebuilt.
lock: venv  ## re-pin requirements*.txt from requirements*.in (versions pinned now are kept)
	@for name in requirements requirements-dev; do \
	    cp -p $$name.txt $$name.txt.before && \
	    echo "pip-compile $$name.in -> $$name.txt" && \
	    $(PIP_COMPILE) --output-file $$name.txt $$name.in || { mv $$name.txt.before $$name.txt; exit 1; }; \
	    if cmp -s $$name.txt $$name.txt.before; then mv $$name.txt.before $$name.txt; \
	    else rm $$name.txt.before; fi; \
	done

smoke:  ## the production install: a fresh runtime-only venv runs the Procfile on PostgreSQL + Redis
	./scripts/smoke

lint: venv  ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	SECRET_KEY=lint-only $(BIN)/mypy .

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv  ## benchmarks on PostgreSQL (see bench/README.md)
	$(PY) bench/run.py

# docker compose: PostgreSQL, Redis, web, worker and beat
up:
	docker compose up -d --build

down:
	docker compose down

migrate:
	docker compose exec web python manage.py migrate

seed:
	docker compose exec web python manage.py seed_data

logs:
	docker compose logs -f

clean:
	rm -rf var/celery var/static var/test.sqlite3*
