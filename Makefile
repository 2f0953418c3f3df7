# `make demo` and `make test` work on a fresh machine: each creates .venv if
# missing and installs the package with the pinned versions CI uses.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKENDS := tensorflow jax torch

.PHONY: demo test test-tensorflow test-jax test-torch lint bench clean

$(STAMP): setup.cfg constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	KERAS_BACKEND=$${KERAS_BACKEND:-tensorflow} $(PY) -m joint_keras.demo

# Each backend runs in its own process: Keras fixes the backend at import.
test: $(STAMP)
	$(PY) -m ruff check .
	@set -e; for b in $(BACKENDS); do \
		echo "=== pytest, KERAS_BACKEND=$$b ==="; \
		KERAS_BACKEND=$$b $(PY) -m pytest $(PYTEST_ARGS); \
	done

test-%: $(STAMP)
	KERAS_BACKEND=$* $(PY) -m pytest $(PYTEST_ARGS)

# Step time and memory against hand-written loops and a functional model,
# each backend in its own processes (about 10 minutes on 2 CPU cores).
bench: $(STAMP)
	$(PY) -m benchmarks.step_time

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) demo_output
