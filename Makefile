# `make demo` and `make test` work on a fresh machine: each creates .venv if
# missing and installs the package with the pinned versions CI uses.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKENDS := tensorflow jax torch
# The next Keras release (constraints-keras-next.txt), in a venv of its own.
VENV_NEXT := .venv-next
PY_NEXT := $(VENV_NEXT)/bin/python
STAMP_NEXT := $(VENV_NEXT)/.installed
NEXT_BACKENDS := $(BACKENDS)
# Two pytest-xdist workers (each test process already uses several threads);
# XDIST= runs the suite in one process.
XDIST ?= -n 2 --dist loadgroup

.PHONY: demo test test-tensorflow test-jax test-torch test-keras-next docs package lint bench clean

$(STAMP): setup.cfg constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# `tensorflow` pulls `keras`; `keras-nightly` owns the same package folder.
$(STAMP_NEXT): setup.cfg constraints.txt constraints-keras-next.txt
	test -x $(PY_NEXT) || $(PYTHON) -m venv $(VENV_NEXT)
	$(PY_NEXT) -m pip install --quiet --upgrade pip
	$(PY_NEXT) -m pip install --quiet -c constraints.txt -e ".[test]"
	$(PY_NEXT) -m pip uninstall --quiet --yes keras
	$(PY_NEXT) -m pip install --quiet --no-deps --force-reinstall -c constraints-keras-next.txt keras-nightly
	touch $(STAMP_NEXT)

demo: $(STAMP)
	KERAS_BACKEND=$${KERAS_BACKEND:-tensorflow} $(PY) -m joint_keras.demo

# Each backend runs in its own process: Keras fixes the backend at import.
test: $(STAMP)
	$(PY) -m ruff check .
	@set -e; for b in $(BACKENDS); do \
		echo "=== pytest, KERAS_BACKEND=$$b ==="; \
		KERAS_BACKEND=$$b $(PY) -m pytest $(XDIST) $(PYTEST_ARGS); \
	done

# The suite on the next Keras release; NEXT_BACKENDS="jax" for one backend.
test-keras-next: $(STAMP_NEXT)
	@set -e; for b in $(NEXT_BACKENDS); do \
		echo "=== pytest on keras-nightly, KERAS_BACKEND=$$b ==="; \
		KERAS_BACKEND=$$b $(PY_NEXT) -m pytest $(XDIST) $(PYTEST_ARGS); \
	done

test-tensorflow test-jax test-torch: test-%: $(STAMP)
	KERAS_BACKEND=$* $(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

# Step time and memory against hand-written loops and a functional model,
# each backend in its own processes (about 10 minutes on 2 CPU cores).
bench: $(STAMP)
	$(PY) -m benchmarks.step_time

# The documentation site (docs/, mkdocs.yml) into site/; strict: a broken
# link or API reference fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# The sdist and wheel into dist/, checked by twine, and the wheel installed
# and imported in a fresh venv of its own (JAX as its backend).
VENV_WHEEL := .venv-wheel
package: $(STAMP)
	rm -rf dist $(VENV_WHEEL)
	$(PY) -m build --no-isolation --outdir dist .
	$(PY) -m twine check --strict dist/*
	$(PYTHON) -m venv $(VENV_WHEEL)
	$(VENV_WHEEL)/bin/pip install --quiet -c constraints.txt dist/*.whl jax
	cd $(VENV_WHEEL) && KERAS_BACKEND=jax bin/python -c \
		"import joint_keras as jk; print('installed', jk.__version__, jk.__file__)"

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) $(VENV_NEXT) $(VENV_WHEEL) demo_output site dist
