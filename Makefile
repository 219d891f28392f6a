# ColdTrace: `make demo` and `make test` are all a newcomer needs.
# Django 6.1 needs Python 3.12 or newer: the first such interpreter on PATH, or
# else the oldest such one pyenv has installed (the lock was resolved on 3.12), is used (or set PYTHON=...).
PYTHON ?= $(shell for p in python3.12 python3.13 python3.14 python3 \
	$$(ls -d $$HOME/.pyenv/versions/3.*/bin/python3 2>/dev/null | sort -V); do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum requirements.lock | cut -d' ' -f1)

.PHONY: demo test bench lint lock clean

$(STAMP): requirements.lock
	@test -n "$(PYTHON)" || { echo "ColdTrace needs Python 3.12 or newer (Django 6.1); set PYTHON=/path/to/python3.12" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	@rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	DEBUG=1 $(BIN)/python manage.py migrate --no-input
	DEBUG=1 $(BIN)/python manage.py seed_demo
	DEBUG=1 $(BIN)/python manage.py run_demo

test: $(STAMP)
	DEBUG=1 $(BIN)/python -m pytest -n 2 --basetemp=var/test-runs $(PYTEST_ARGS)

bench: $(STAMP)
	DEBUG=1 $(BIN)/python manage.py bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=1 $(BIN)/mypy .
	DEBUG=1 $(BIN)/python manage.py makemigrations --check --dry-run

# Re-pin every dependency after editing pyproject.toml: the development lock, then the production lock
# (docker/Dockerfile) with the same versions and without the dev extra.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --extra dev --generate-hashes --strip-extras --allow-unsafe -o requirements.lock pyproject.toml
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe -c requirements.lock \
		-o requirements-production.lock pyproject.toml

clean:
	rm -rf $(VENV) var/celery
