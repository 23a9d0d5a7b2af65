# CNN Visualization Studio: `make run` starts the app, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PORT ?= 8501

.PHONY: run test test-fast lint bench browser clean

$(VENV)/.app-installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.app-installed requirements-dev.txt requirements-scale.txt
	$(PIP) install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

## Set up the virtual environment (first time: a few minutes) and start the app.
run: $(VENV)/.app-installed
	$(PY) -m streamlit run app.py --server.port $(PORT)

## Headless Chromium for the browser tests (Debian's package; Playwright never downloads one).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing chromium with apt-get (needs root)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; }

## Set up and run every test: unit, end-to-end on the real models, AppTest and browser tests.
test: $(VENV)/.dev-installed browser
	VIZCORE_OFFLINE=1 VIZCORE_REQUIRE_E2E=1 $(PY) -m pytest -q -p no:cacheprovider

## Everything but the browser tests.
test-fast: $(VENV)/.dev-installed
	VIZCORE_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider -m "not e2e"

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.dev-installed
	$(PY) bench/attribution.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
