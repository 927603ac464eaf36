# The project's verbs. Each sets up the virtual environment first if needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
READY  := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto' -not -path 'protos/google/*' | sort)

.PHONY: run test gen token proto-baseline proto-bundle bench compose-test interop-test

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

# The contract other teams take: the protos with google/rpc, buf.gen.yaml for Go, Java and
# TypeScript, and service-config.json (retry policy, default deadline). See the README.
BUNDLE ?= dist/interview-contract.tar.gz
BUNDLED := protos/README.md protos/buf.yaml protos/interview protos/google buf.gen.yaml service-config.json
proto-bundle: $(READY)
	$(BIN)/buf build protos -o /dev/null
	mkdir -p $(dir $(BUNDLE))
	tar -czf $(BUNDLE) --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 $(BUNDLED)
	@echo "wrote $(BUNDLE)"

# Clients in Go, TypeScript and Java, and the README's grpcurl recipes verbatim, against real servers
# (the recipes on `make run`'s default ports). Installs its toolchains: Go, its gRPC
# libraries and the protoc plugins from Debian (no Go module proxy here; needs root), protoc,
# grpc-java's plugin, a JDK and grpc-java's jars (no Maven repository either), jq for the
# README's recipes, and the npm packages of interop/ts/package-lock.json.
# golang-github-golang-protobuf-1-5-dev: grpc-go 1.33's codec goes through it, and the 1.3 release
# Debian installs by default cannot read what protoc-gen-go 1.28 generates.
INTEROP_DEBS := golang-go golang-google-grpc-dev golang-google-genproto-dev golang-google-protobuf-dev \
  golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc \
  protobuf-compiler protobuf-compiler-grpc-java-plugin jq \
  openjdk-17-jdk-headless libgrpc-java libprotobuf-java libnetty-java libperfmark-java libgeronimo-annotation-1.3-spec-java
interop-test: $(READY)
	dpkg -s $(INTEROP_DEBS) >/dev/null 2>&1 || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(INTEROP_DEBS); }
	npm ci --prefix interop/ts --no-audit --no-fund --loglevel=error
	$(BIN)/python -m pytest --interop tests/interop $(PYTEST_ARGS)

# Needs a Docker engine (on our machines: eval "$$(../shared/tools/containers/up)"). Builds, brings
# docker-compose.yml up, runs the end-to-end and fault scenarios, and always tears it down.
compose-test: $(READY)
	$(BIN)/python deploy/compose_test.py
