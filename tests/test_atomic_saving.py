"""A process killed (SIGKILL) at a random instant while saving leaves the
last good file loadable: `JointModel.save` and `save_weights`, and so the
Keras callbacks that call them, write a temporary file and rename it.

It tests file writing, the same on every backend: it runs on JAX only.
"""

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import keras
import pytest

import joint_keras as jk
from tests.atomic import save_loop
from tests.conftest import BACKEND

ROOT = pathlib.Path(__file__).resolve().parents[1]
KILLS = 6

pytestmark = [
    pytest.mark.skipif(BACKEND != "jax", reason="file writing: one backend"),
    pytest.mark.heavy,
]


def kill_while_saving(mode, directory, rng):
    env = dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.atomic.save_loop", mode, str(directory)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert line.strip() == "ready", line + process.stderr.read()
        time.sleep(rng.uniform(0.0, 0.5))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


@pytest.mark.parametrize("mode", ["save", "weights", "checkpoint", "backup"])
def test_killed_while_saving_the_last_file_still_loads(tmp_path, mode):
    rng = random.Random(0)
    failures = []
    for k in range(KILLS):
        directory = tmp_path / str(k)
        directory.mkdir()
        kill_while_saving(mode, directory, rng)
        try:
            if mode == "save":
                keras.models.load_model(directory / "m.keras")
            elif mode == "weights":
                save_loop.model().load_weights(directory / "m.weights.h5")
            elif mode == "checkpoint":
                keras.models.load_model(directory / "best.keras")
            else:  # Restart training from the backup, as after a crash.
                x, y = save_loop.data()
                backup = jk.callbacks.BackupAndRestore(directory / "backup")
                save_loop.model().fit(x, y, epochs=1, verbose=0, callbacks=[backup])
        except Exception as error:  # Any failure to load is the defect.
            failures.append(f"kill {k}: {type(error).__name__}: {error}")
    assert not failures, "\n".join(failures)
