# Celltrace: the two commands of the README, and the helpers they use.
#   make run   set up, load the demo plant, simulate production, serve on 127.0.0.1:8000
#   make test  set up and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
CELLS  ?= 1500
SEED   ?= 7

.PHONY: run test install lint format migrate bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)

$(DEPS): requirements/base.txt requirements/dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	touch $@

install: $(DEPS)

migrate: install
	$(BIN)/python manage.py migrate --noinput

run: migrate
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py simulate --cells $(CELLS) --seed $(SEED) --formation
	$(BIN)/python manage.py spc_baseline --approve-as quality \
		--reason "Demo commissioning baseline from the first production run"
	$(BIN)/python manage.py vision_demo
	bash scripts/run_demo.sh

test: install
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: migrate
	$(BIN)/python -m bench.trace --cells 100000 --json

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
