# A newcomer's entry points: `make run` starts everything on the embedded default,
# `make test` runs the suite. Both create the virtual environment on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PYTEST_ARGS ?=

.PHONY: venv run test lint fmt bench up down migrate seed logs clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

run: venv  ## migrate, seed an empty database, start web + worker + beat
	./scripts/run

test: venv  ## pytest on DATABASE_URL / REDIS_URL, or the embedded default when unset
	$(BIN)/pytest $(PYTEST_ARGS)

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
