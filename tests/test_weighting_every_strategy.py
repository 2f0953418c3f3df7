"""What every strategy of `jk.weighting` promises alike: it is found by its
name, trains a shared-trunk model through `fit()` with finite losses, logs
each task's effective weight (and, gradient-level, the gradients' cosines),
and survives `get_config` / `from_config`. Each strategy's own formula is
tested in its `test_weighting_<name>.py`; saving and exact resume in a
fresh process, in `tests/resume/cases.py`."""

import keras
import numpy as np
import pytest

import joint_keras as jk

NAMES = {
    "fixed": jk.weighting.Fixed,
    "uncertainty": jk.weighting.Uncertainty,
    "dwa": jk.weighting.DWA,
    "rlw": jk.weighting.RLW,
    "gradnorm": jk.weighting.GradNorm,
    "famo": jk.weighting.FAMO,
    "pcgrad": jk.weighting.PCGrad,
    "graddrop": jk.weighting.GradDrop,
    "mgda": jk.weighting.MGDA,
    "upgrad": jk.weighting.UPGrad,
    "dualproj": jk.weighting.DualProj,
    "cagrad": jk.weighting.CAGrad,
    "imtlg": jk.weighting.IMTLG,
    "aligned_mtl": jk.weighting.AlignedMTL,
    "config": jk.weighting.ConFIG,
    "gradvac": jk.weighting.GradVac,
    "nash_mtl": jk.weighting.NashMTL,
    "fairgrad": jk.weighting.FairGrad,
    "dbmtl": jk.weighting.DBMTL,
}
TASKS = ("t0", "t1", "t2")


def test_there_are_nineteen_strategies_and_get_knows_every_name():
    assert len(NAMES) == 19
    for name, cls in NAMES.items():
        assert type(jk.weighting.get(name)) is cls
        assert type(jk.weighting.get(name.upper())) is cls
    with pytest.raises(ValueError, match="one of .*'nash_mtl'"):
        jk.weighting.get("nash")


@pytest.mark.parametrize("name", list(NAMES))
def test_every_strategy_trains_logs_and_round_trips_its_config(name):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(6, activation="tanh", name="trunk")(inputs)
    joint = jk.JointModel(
        {t: keras.Model(inputs, keras.layers.Dense(1)(hidden)) for t in TASKS}
    )
    joint.compile(optimizer="adam", loss="mse", weighting=name)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 4)).astype("float32")
    y = {"t0": x[:, :1], "t1": -2 * x[:, :1] + x[:, 1:2], "t2": np.sin(x[:, 2:3])}

    def task_losses():
        logs = joint.evaluate(x, y, verbose=0, return_dict=True)
        return sum(logs[f"{t}_loss"] for t in TASKS)

    before = task_losses()
    logs = joint.fit(x, y, batch_size=16, epochs=3, verbose=0).history
    assert np.all(np.isfinite(logs["loss"]))
    assert task_losses() < before
    has_weights = name != "fixed"
    assert all((f"{t}_weight" in logs) == has_weights for t in TASKS)
    gradient_level = NAMES[name].gradient_level
    assert ("grad_cos/t0/t2" in logs) == gradient_level
    strategy = joint.weighting
    copy = NAMES[name].from_config(strategy.get_config())
    assert copy.get_config() == strategy.get_config()
