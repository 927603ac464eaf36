# The project's verbs. Each sets up the virtual environment first if needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
READY  := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto' | sort)

.PHONY: run test gen token proto-baseline bench compose-test

$(READY): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(READY)

# TLS=1: mutual TLS with dev certificates generated into DATA_DIR (see the README).
run: $(READY)
	$(BIN)/python -m common.devstack run $(if $(TLS),--tls)

test: $(READY)
	$(BIN)/buf lint protos
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# GEN_OUT lets the freshness test generate into a scratch folder with the same recipe.
# descriptors.binpb keeps the proto comments (generated modules drop them) for server reflection.
GEN_OUT ?= gen
gen: $(READY)
	rm -rf $(GEN_OUT)/interview && mkdir -p $(GEN_OUT)/interview
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --python_out=$(GEN_OUT) --grpc_python_out=$(GEN_OUT) \
	  --mypy_out=$(GEN_OUT) --mypy_grpc_out=$(GEN_OUT) \
	  --descriptor_set_out=$(GEN_OUT)/interview/descriptors.binpb --include_source_info --include_imports \
	  $(PROTOS)
	find $(GEN_OUT)/interview -type d -exec touch {}/__init__.py \;

# USER=<uuid> for a user token, or SERVICE=<name> [ROLES=a,b] for a service token. SERVICE is
# tested first: USER is also the login name in most shells.
token: $(READY)
	@$(BIN)/python -m common.devstack token $(if $(SERVICE),--service "$(SERVICE)" --roles "$(ROLES)",--user "$(USER)")

# Starts its own stack on a fresh embedded PostgreSQL; the report lands in bench/results/.
bench: $(READY)
	$(BIN)/python -m bench

# The contract other teams build against. Refresh only for a deliberate, announced change
# (a new major version, or before the first release); never to silence `buf breaking`.
proto-baseline: $(READY)
	$(BIN)/buf build protos -o protos/baseline.binpb

# Needs a Docker engine (on our machines: eval "$$(../shared/tools/containers/up)"). Builds, brings
# docker-compose.yml up, runs the end-to-end and fault scenarios, and always tears it down.
compose-test: $(READY)
	$(BIN)/python deploy/compose_test.py
