# The README's two commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install run test lint unit integration faults bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

# API + dispatcher in one process on 127.0.0.1:8080; embedded Postgres unless DATABASE_URL is set.
# Loopback receivers over plain http are allowed here so a local receiver can be tried at once.
run: install
	HOOKPOST_ALLOWED_NETWORKS="$${HOOKPOST_ALLOWED_NETWORKS-127.0.0.0/8}" \
	HOOKPOST_ALLOW_HTTP="$${HOOKPOST_ALLOW_HTTP-true}" \
	$(BIN)/hookpost serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install
	$(BIN)/python -m pytest tests/integration

# Postgres restarts, crashes and outages under load, each fault three times (`make test` runs
# each once); FAULT_ARGS passes more, e.g. FAULT_ARGS="--fault-away 60 -k away".
faults: install
	$(BIN)/python -m pytest tests/faults --fault-repeat 3 $(FAULT_ARGS)

test: lint
	$(BIN)/python -m pytest

BENCH_INSTALLED := $(VENV)/.bench-installed

$(BENCH_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_INSTALLED)

# The benchmark (see bench/README.md); `make bench BENCH_ARGS=--quick` for a smoke run.
bench: $(BENCH_INSTALLED)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .hookpost .mypy_cache .ruff_cache .pytest_cache
