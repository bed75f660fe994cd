# The two commands of the README: `make run` and `make test`. Everything installs into .venv
# from the pinned, hashed lock file (requirements-dev.lock: the app's requirements.lock plus
# the test tools); nothing needs a server (SQLite + Celery's filesystem
# broker). CI additionally points TEST_POSTGRES_URL / TEST_REDIS_URL at real services.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-lock
UV_VERSION := 0.13.9
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run test test-sqlite test-postgres lint lock clean

install: $(STAMP)

$(STAMP): requirements-dev.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@UV_PYTHON_DOWNLOADS=never $(BIN)/uv pip sync --quiet --python $(BIN)/python --require-hashes requirements-dev.lock
	@touch $@

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_demo
	$(BIN)/python manage.py collectstatic --noinput -v0
	@echo "Pullboard: http://127.0.0.1:$${WEB_PORT:-8000} (Ctrl-C stops web, worker and beat)"
	PULLBOARD_BASE_URL=$${PULLBOARD_BASE_URL:-http://127.0.0.1:$${WEB_PORT:-8000}} $(BIN)/honcho start -f Procfile

test: install test-sqlite test-postgres

test-sqlite: install
	$(BIN)/pytest

# The same suite on PostgreSQL with the Redis broker, when CI (or you) provide them.
test-postgres: install
	@if [ -n "$$TEST_POSTGRES_URL" ]; then \
		test -n "$$TEST_REDIS_URL" || { echo "TEST_REDIS_URL is required with TEST_POSTGRES_URL"; exit 1; }; \
		DATABASE_URL="$$TEST_POSTGRES_URL" CELERY_BROKER_URL="$$TEST_REDIS_URL" \
			$(BIN)/pytest -m "not browser"; \
	elif [ "$$CI" = "true" ]; then \
		echo "CI=true but TEST_POSTGRES_URL is not set: the PostgreSQL run is required in CI"; exit 1; \
	else \
		echo "TEST_POSTGRES_URL not set: PostgreSQL run skipped (.ci/run provides it)"; \
	fi

lint: install
	$(BIN)/ruff check .

# Re-pin after editing pyproject.toml.
lock: install
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 -q -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -q -o requirements-dev.lock

clean:
	rm -rf $(VENV) var staticfiles
