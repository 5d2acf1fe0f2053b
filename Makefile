# `make demo` and `make test` are all a newcomer needs; both install into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test slow soak bench binary lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing DeepNode and its dependencies (llama-cpp-python builds from source the first time: ~10 min)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The dashboard's browser tests drive Debian's Chromium through its chromedriver. Where they are
# missing and we are root with apt-get, install them; never fatal (without them those tests skip).
install: $(STAMP)
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium and chromium-driver (for the dashboard's browser tests)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver) || echo "could not install chromium: the browser tests will skip"; \
	  else \
	    echo "no chromium: the dashboard's browser tests will skip (apt-get install chromium chromium-driver)"; \
	  fi; \
	fi

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh

# pytest exits 5 when it collects no test; make treats that, like any failure, as an error.
test: install
	$(PY) -m pytest -q

# Tests over two minutes each (building and running the single binary); CI runs them too.
slow: install
	$(PY) -m pytest -q -m slow

soak: install
	$(PY) -m pytest -q -m soak

# dist/dn: DeepNode as one executable file that needs no Python (binary/onefile.py says how).
# PyInstaller gathers the program into a folder; onefile.py packs that folder into the one file.
BINARY_WORK := build/binary
binary: install
	$(PY) -c 'import PyInstaller' 2>/dev/null || $(PY) -m pip install --quiet -e '.[binary]'
	cd binary && PYTHONPATH=$(CURDIR) $(CURDIR)/$(VENV)/bin/pyinstaller --noconfirm --log-level WARN \
	  --distpath $(CURDIR)/$(BINARY_WORK)/dist --workpath $(CURDIR)/$(BINARY_WORK)/work dn.spec
	$(PY) binary/onefile.py $(BINARY_WORK)/dist/dn dist/dn

bench: install binary
	$(PY) bench/chain_ingest.py
	$(PY) bench/sync.py
	$(PY) bench/propagation.py
	$(PY) bench/propagation.py --hostile
	$(PY) bench/check.py
	$(PY) bench/sampling.py
	$(PY) bench/drift.py
	$(PY) bench/query.py
	$(PY) bench/concurrency.py
	$(PY) bench/powr.py
	$(PY) bench/powr_rank.py
	$(PY) bench/epoch.py
	$(PY) bench/startup.py

lint: install
	$(VENV)/bin/ruff check dn tests bench tools
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache *.egg-info build dist
