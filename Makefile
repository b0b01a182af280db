# Two entry points; each sets up the environment first (idempotent: a second run reuses it).
#   make demo   set up, then run the quick demo (train, evaluate, analyse, visualise)
#   make test   set up, then run the whole test suite
# They work from any directory (make -f path/to/Makefile, or make -C path/to/repo).
# VENV=DIR puts the environment elsewhere (default: .venv in the repository), as for
# tools/setup_env.sh; ARGS="..." passes arguments to the demo or to pytest.
ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
VENV ?= $(ROOT)/.venv
VENV_DIR := $(abspath $(VENV))
PYTHON_VENV := $(VENV_DIR)/bin/python

.PHONY: setup demo test
setup:
	cd "$(ROOT)" && VENV="$(VENV_DIR)" bash tools/setup_env.sh

demo: setup
	cd "$(ROOT)" && "$(PYTHON_VENV)" tools/demo.py $(ARGS)

test: setup
	cd "$(ROOT)" && "$(PYTHON_VENV)" -m pytest tests $(ARGS)
