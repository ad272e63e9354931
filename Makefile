# cogport: two commands on a fresh machine.
#   make serve   create .venv if needed, then serve on SQLite + local files under ./data
#   make test    the whole suite (SQLite; PostgreSQL too when COGPORT_TEST_DATABASE_URL is set)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test test-sqlite test-postgres lint typecheck bench clean

# --compile-bytecode: a server's start reads bytecode rather than compiling every module it imports, even where
# PYTHONDONTWRITEBYTECODE is set (Python then never writes it: the start took twice as long, docs/benchmarks.md).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/cogport serve $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

test-postgres: $(STAMP)
	COGPORT_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test $(BIN)/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
