# Two entry points; each sets up .venv first (idempotent: a second run reuses it).
#   make demo   set up, then run the quick demo (train, evaluate, analyse, visualise)
#   make test   set up, then run the whole test suite
PYTHON_VENV := .venv/bin/python

.PHONY: setup demo test
setup:
	bash tools/setup_env.sh

demo: setup
	$(PYTHON_VENV) tools/demo.py $(ARGS)

test: setup
	$(PYTHON_VENV) -m pytest tests $(ARGS)
