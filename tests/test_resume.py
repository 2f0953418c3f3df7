"""Every documented `compile()` configuration survives `model.save()` and
`keras.models.load_model()` in a fresh process, and training resumed from the
file ends on the same weights as training that never stopped."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import BACKEND
from tests.resume import cases

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_module(module, *args, timeout=600):
    env = dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_every_configuration_resumes_exactly_in_a_fresh_process(tmp_path):
    uninterrupted = {}
    for case in cases.CASES:
        model = cases.build(case)
        cases.fit_one_epoch(model, case)
        model.save(tmp_path / f"{case}.keras")
        cases.fit_one_epoch(model, case)  # the run that never stopped
        uninterrupted[case] = cases.state(model)
    run_module("tests.resume.resume", tmp_path, *cases.CASES)
    mismatches = []
    for case in cases.CASES:
        with np.load(tmp_path / f"{case}.npz") as resumed:
            got = [resumed[f"arr_{i}"] for i in range(len(resumed.files))]
        want = uninterrupted[case]
        if len(got) != len(want):
            mismatches.append(f"{case}: {len(got)} variables, want {len(want)}")
            continue
        worst = max(
            float(np.max(np.abs(g - w), initial=0.0)) for g, w in zip(got, want)
        )
        if worst > 1e-6:
            mismatches.append(f"{case}: differs by {worst:.3g}")
    assert not mismatches, "\n".join(mismatches)


def test_a_frozen_sequential_submodel_stays_frozen_after_loading(tmp_path):
    import keras

    model = cases.build("frozen_teacher")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.submodels["teacher"].trainable is False
    assert loaded.submodels["student"].trainable is True


@pytest.mark.parametrize("auto_scale_loss", [False, True])
def test_auto_scale_loss_is_saved(auto_scale_loss):
    import keras

    model = cases.build("dropout")
    model.compile(optimizer="adam", loss="mse", auto_scale_loss=auto_scale_loss)
    config = keras.saving.deserialize_keras_object(model.get_compile_config())
    assert config["auto_scale_loss"] is auto_scale_loss


class StopAfter:
    """A callback that interrupts training after `epochs` epochs."""

    def __new__(cls, epochs):
        import keras

        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch + 1 == epochs:
                    raise KeyboardInterrupt

        return Stop()


def test_backup_and_restore_with_dropout_resumes_exactly(tmp_path):
    import joint_keras as jk

    x, _ = cases.data()
    y = cases.targets("dropout")
    fit = dict(batch_size=cases.BATCH, shuffle=False, verbose=0)
    straight = cases.build("dropout")
    straight.fit(x, y, epochs=3, **fit)
    interrupted = cases.build("dropout")
    backup = jk.callbacks.BackupAndRestore(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(x, y, epochs=3, callbacks=[backup, StopAfter(2)], **fit)
    run_module("tests.resume.backup", tmp_path, 3)
    with np.load(tmp_path / "final.npz") as resumed:
        got = [resumed[f"arr_{i}"] for i in range(len(resumed.files))]
    for g, w in zip(got, cases.state(straight), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
