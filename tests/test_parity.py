"""Same models, same initial weights, same data: same numbers on every backend.

`tests/parity/run.py` trains two `JointModel`s (a shared layer; and
BatchNormalization, dropout and a shared layer) in one process per backend;
this test compares their per-step losses, evaluation logs, final weights
(moving statistics included) and predictions, to float32 tolerance.

It starts all three backends itself, so it runs once, from the TensorFlow
test process, not once per backend.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import BACKEND

ROOT = pathlib.Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "jax", "torch")

pytestmark = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="cross-backend test: runs once, from the TensorFlow process",
)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("parity")
    procs = {}
    for backend in BACKENDS:
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT))
        procs[backend] = subprocess.Popen(
            [sys.executable, "-m", "tests.parity.run", str(out / backend)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for backend, proc in procs.items():
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{backend} run failed:\n{output[-3000:]}"
    return {b: dict(np.load(out / f"{b}.npz")) for b in BACKENDS}


@pytest.mark.parametrize("other", ["jax", "torch"])
def test_backends_give_the_same_numbers(results, other):
    reference = results["tensorflow"]
    assert set(results[other]) == set(reference)
    assert any("moving_mean" in key for key in reference)
    for key, want in reference.items():
        np.testing.assert_allclose(
            results[other][key],
            want,
            rtol=1e-4,
            atol=1e-5,
            err_msg=f"{key}: {other} differs from tensorflow",
        )


def test_training_moved_every_model(results):
    # Guard against a vacuous parity: losses must change over the steps.
    for prefix in ("dense", "bn_dropout"):
        steps = results["tensorflow"][f"{prefix}/step_logs"]
        assert steps.shape == (12, 3)
        assert not np.allclose(steps[0], steps[5])
