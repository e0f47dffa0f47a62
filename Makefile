# The two commands: `make run` and `make test`. Both set up a fresh machine first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit integration e2e clean model asyncapi

model: data/classify/model.npz

# Debian packages the checks need (browser tests, promtool). Installed only when run as
# root (CI, fresh machines); elsewhere the tests that need them say so and skip.
DEBS := chromium fonts-wqy-zenhei prometheus
APT_STAMP := $(VENV)/.debs

$(APT_STAMP):
	@mkdir -p $(VENV)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
		fi; \
	fi
	touch $(APT_STAMP)

# The official AsyncAPI CLI, which tests/unit/test_asyncapi.py runs (npx) on docs/asyncapi/.
# Installed the same way: only as root; elsewhere that test downloads it or says it skips.
# 4.1.1 is the last release that supports this Node (20); later ones want Node 24.
ASYNCAPI_CLI := @asyncapi/cli@4.1.1
NPM_STAMP := $(VENV)/.npm

$(NPM_STAMP):
	@mkdir -p $(VENV)
	@if [ "$$(id -u)" = 0 ] && command -v npm >/dev/null; then \
		npm ls -g $(ASYNCAPI_CLI) >/dev/null 2>&1 || \
		npm install -g --no-audit --no-fund --loglevel=error $(ASYNCAPI_CLI) || \
		echo "warning: $(ASYNCAPI_CLI) not installed; the AsyncAPI test will fetch it with npx"; \
	fi
	touch $(NPM_STAMP)

$(STAMP): pyproject.toml $(APT_STAMP)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The classifier model, rebuilt when the corpus or its policy changes.
MODEL := data/classify/model.npz
$(MODEL): $(STAMP) policy/classify.yaml $(wildcard data/classify/corpus/*.jsonl)
	$(BIN)/omniroute classify train

run: $(STAMP) $(MODEL)
	$(BIN)/omniroute dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy shared services omniroute

test: lint typecheck $(MODEL) $(NPM_STAMP)
	$(BIN)/python -m pytest

unit: $(STAMP) $(MODEL) $(NPM_STAMP)
	$(BIN)/python -m pytest tests/unit tests/service tests/deploy

# The committed AsyncAPI documents (docs/asyncapi/), regenerated from the code with the
# default settings; tests/unit/test_asyncapi.py fails when they differ.
asyncapi: $(STAMP)
	@mkdir -p docs/asyncapi
	@for s in ingest router sla notify; do \
		env -u OMNIROUTE_KAFKA_BOOTSTRAP $(BIN)/omniroute asyncapi $$s > docs/asyncapi/$$s.json || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
