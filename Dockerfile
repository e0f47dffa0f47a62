# syntax=docker/dockerfile:1
# One image for the four services; the command picks one:
#   docker run omniroute ingest|router|sla|notify
# Dependencies are installed before the code is copied, so a code change
# rebuilds only the last, small layers.

ARG PYTHON_IMAGE=python:3.11-slim

# --- requirements: the dependency list alone, read from pyproject.toml --------
# Its output is one file; a pyproject edit that leaves the dependencies alone
# (tool settings, version) yields the same file and keeps the cache below.
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt

# --- builder: a virtualenv holding the dependencies, then the package ----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY --from=requirements /src/requirements.txt ./
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r requirements.txt
# The source: only these layers change when the code does.
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY omniroute ./omniroute
COPY policy ./policy
COPY data/classify/corpus ./data/classify/corpus
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps .
# The classifier, trained once at build time (deterministic; refused below the policy's
# minimum accuracy): services only load it.
RUN OMNIROUTE_CLASSIFIER_MODEL=/src/data/classify/model.npz \
    OMNIROUTE_CLASSIFIER_CORPUS=/src/data/classify/corpus \
    OMNIROUTE_POLICY_DIR=/src/policy \
    omniroute classify train

# --- runtime: slim Python, the virtualenv, the policy data, no build tools ----
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="omniroute" \
      org.opencontainers.image.description="Omnichannel support routing for cryptocurrency exchanges" \
      org.opencontainers.image.licenses="Apache-2.0"
# Nothing is written at run time (read-only root filesystem): no bytecode
# caches, logs go to stdout unbuffered.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    OMNIROUTE_HTTP_HOST=0.0.0.0 \
    OMNIROUTE_POLICY_DIR=/app/policy \
    OMNIROUTE_CLASSIFIER_MODEL=/app/data/classify/model.npz \
    OMNIROUTE_CLASSIFIER_CORPUS=/app/data/classify/corpus
RUN groupadd --system --gid 10001 omniroute \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin omniroute
COPY --from=builder /opt/venv /opt/venv
# Policy data (keywords, priority rules, SLA targets, templates): a ConfigMap
# or a bind mount can replace this directory without a rebuild.
COPY --from=builder /src/policy /app/policy
COPY --from=builder /src/data /app/data
WORKDIR /app
USER 10001:10001
# ingest 8081, router 8082, sla 8083, notify 8084 (OMNIROUTE_HTTP_PORT).
EXPOSE 8081 8082 8083 8084
# No HEALTHCHECK: the port depends on the command. docker-compose.yml and the
# Kubernetes probes check /readyz on the right port.
ENTRYPOINT ["omniroute"]
CMD ["ingest"]
