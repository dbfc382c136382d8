# Every target sets itself up: a fresh clone needs only python3 (>= 3.10).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rnnlab-installed

.PHONY: demo test bench clean

# the native engine's operators are compiled into the package here, at install (setup.py); a change to
# its C++ sources rebuilds them
ENGINE_SOURCES := $(wildcard src/rnnlab/engine/csrc/*.cpp src/rnnlab/engine/csrc/*.h src/rnnlab/engine/csrc/cells/*.h)

$(STAMP): pyproject.toml setup.py $(ENGINE_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: on these machines this is the local CPU build; letting pip resolve torch
	# through rnnlab's dependency range could fetch a multi-GB CUDA build instead
	$(PY) -m pip install --quiet torch==2.13.0
	# --no-build-isolation: the extension compiles against the torch just installed (an isolated build
	# environment would fetch another torch); the build backend must then be in the venv itself
	$(PY) -m pip install --quiet "setuptools>=77" ninja numpy
	$(PY) -m pip install --quiet --no-build-isolation -e ".[dev,data]"
	# the Japanese vowels yardstick reads the .ts files that aeon's wheel carries; --no-deps leaves out
	# aeon's own dependencies, which rnnlab never imports (tests skip the yardstick when it is missing)
	$(PY) -m pip install --quiet --no-deps aeon==1.6.0
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache src/rnnlab/engine/_C*.so
