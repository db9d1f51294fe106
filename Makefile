# Two commands do all set-up on a fresh machine:  `make run`  and  `make test`.
# Both create .venv when needed, install system packages (when possible) and Python packages,
# and are quick no-ops for set-up when everything is already there.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.neurowb-installed
# Pinned so a CPU-only machine installs the CPU build (on a GPU machine the same pin gives CUDA).
TORCH  := torch==2.13.0
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: setup system-deps run demo test bench clean

setup: system-deps $(STAMP)

system-deps:
	@bash installers/linux/system-deps.sh

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "NeuroWorkbench needs Python >= 3.10 (found: $$($(PYTHON) --version)). Set PYTHON=python3.11 or similar."; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing Python packages into $(VENV) (first time: a few minutes)..."
	@$(PIP) $(TORCH)
	@$(PIP) -e '.[test]'
	@touch $(STAMP)

# The workbench on the demo data; with no display, on a virtual one, writing screenshots.
run: setup
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then $(VENV)/bin/neurowb demo; \
	 else $(VENV)/bin/neurowb demo --screenshots demo-output; fi

# The whole test suite; GUI tests run on a virtual display (pytest-xvfb) when there is no screen.
test: setup
	@$(PY) -m pytest

bench: setup
	@for b in threads parallel; do $(PY) -m benchmarks.$$b; done

clean:
	rm -rf $(VENV) demo-output .pytest_cache build *.egg-info
