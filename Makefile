# The two commands: `make run` and `make test`. Both set up a fresh machine first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit integration e2e clean model

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
	$(BIN)/mypy shared services

test: lint typecheck $(MODEL)
	$(BIN)/python -m pytest

unit: $(STAMP) $(MODEL)
	$(BIN)/python -m pytest tests/unit tests/service

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
