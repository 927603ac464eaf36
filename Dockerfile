# One image for both services; the command picks what runs:
#   docker run IMAGE                              session service (the default)
#   docker run IMAGE reputation_service           reputation service
#   docker run IMAGE session_service migrate      apply that service's migrations, then exit
# Configuration is the environment variables in README "Configuration"; docker-compose.yml
# wires up the whole system and `make compose-test` runs it.

# Build stage: install the project and its runtime dependencies (not the [dev] extra) into a
# virtual environment, which is all the final stage copies.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
COPY gen ./gen
COPY common ./common
COPY session_service ./session_service
COPY reputation_service ./reputation_service
RUN /opt/venv/bin/pip install . \
 && /opt/venv/bin/pip check

FROM python:3.11-slim
RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid app --no-log-init --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
# Mount point of the key-material volume, owned by the service user so the keys step can fill it.
RUN mkdir /keys && chown 10001:10001 /keys
# Listen on all interfaces: a container's loopback is unreachable from anywhere else.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SESSION_LISTEN=0.0.0.0:50051 \
    REPUTATION_LISTEN=0.0.0.0:50052 \
    SESSION_METRICS_LISTEN=0.0.0.0:9151 \
    REPUTATION_METRICS_LISTEN=0.0.0.0:9152
# An empty working directory: `python -m` puts it first on sys.path.
WORKDIR /app
USER 10001:10001
EXPOSE 50051 50052 9151 9152
# gRPC health protocol, overall status; with no address it checks this container's service
# on the ports of SESSION_LISTEN / REPUTATION_LISTEN. One-shot migrate containers exit first.
HEALTHCHECK --interval=10s --timeout=6s --start-period=20s --retries=3 \
    CMD ["python", "-m", "common.healthcheck"]
# Exec form: python is PID 1 and gets SIGTERM itself (the services stop gracefully on it).
ENTRYPOINT ["python", "-m"]
CMD ["session_service"]
