"""Every notebook in `notebooks/` executes without error on this backend
(but 02 and 03 on PyTorch: see `SLOW_ON_TORCH`)."""

import pathlib

import pytest

from tests.conftest import BACKEND
from tests.conftest import WARNINGS_AS_ERRORS

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# PyTorch runs Keras steps eagerly: these take 11 and 8 minutes there on 2
# CPU cores (against under a minute on TensorFlow and JAX, but for notebook
# 03's JAX-only paper figure); what they show is tested on PyTorch by the
# rest of the suite.
SLOW_ON_TORCH = {"02_joint_losses.ipynb", "03_weighting.ipynb"}


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no notebook to execute"


@pytest.mark.heavy
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch):
    if BACKEND == "torch" and path.name in SLOW_ON_TORCH:
        pytest.skip("eager PyTorch steps: minutes per notebook (see SLOW_ON_TORCH)")
    # The kernel inherits KERAS_BACKEND and finds the package on its path.
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(path, as_version=4)
    # A first cell, not saved: the library's warnings are errors here.
    notebook.cells.insert(0, nbformat.v4.new_code_cell(WARNINGS_AS_ERRORS))
    client = nbclient.NotebookClient(
        notebook,
        # Per cell: notebook 03's paper figure (2 million steps on JAX) says
        # it takes 5 to 10 minutes on two cores; this catches a hang.
        timeout=1200,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert code_cells
    assert all(c.execution_count for c in code_cells)
