# The two set-up commands of the README: `make demo` and `make test` (and `make test-fast`, the lane
# of tests that load no model). All create or update
# .venv and are quick on a second run (the install is redone only when pyproject.toml or
# constraints.txt change).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo bench clean browser

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# constraints.txt pins torch to 2.13.0, the CPU build this kind of machine keeps on disk:
	# a bare `torch` requirement would pull a multi-GB CUDA build.
	# the ray extra too, so that the test of `smm4h study --executor ray` runs (about 80 MB of wheels, 250 MB installed)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

# The report test renders report.html in Debian's headless Chromium; install it where we can.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium not installed: the report's browser test will be skipped"; }

test: $(STAMP) browser
	$(PY) -m pytest

# The fast lane: every test but those marked slow (they load a model, MiniLM or SmolLM2 behind
# llama.cpp's server, or run whole commands as processes); seconds, for the edit-test loop.
# `make test` runs both lanes.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" -n 2

# The main job: the whole study on the Task 5 sample data with the embedded models (offline, CPU).
# A second run finds every step up to date and only rewrites the report.
demo: $(STAMP)
	$(VENV)/bin/smm4h study --task 5 --out study

# Benchmarks print one result line each, with a ratio against a baseline measured in the same run.
# Those on real data read ../shared/data/psytar (override with PSYTAR=...).
PSYTAR ?= ../shared/data/psytar
bench: $(STAMP)
	set -e; for script in bench/[!_]*.py; do echo "== $$script"; $(PY) $$script --psytar $(PSYTAR); done

clean:
	rm -rf $(VENV) .pytest_cache
