"""One policy for non-finite losses, for all 19 strategies.

A strategy never stores a non-finite value: in a training step whose task
losses (or per-task gradients) are NaN or infinite it keeps its state as it
was, counts the step in `skipped_updates`, and `fit()` warns at the end of
the epoch. The model's own update is Keras's: `TerminateOnNaN` still sees
the NaN `loss`, and a `LossScaleOptimizer` skips the step. With one, the
NaN batch is then as if it had not been there (checked against the run
without it).
"""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from tests.test_strategy_layouts import STATEFUL
from tests.test_strategy_layouts import adam_model
from tests.test_strategy_layouts import batch
from tests.test_strategy_layouts import run_eagerly
from tests.test_strategy_layouts import shared_trunk_model
from tests.test_weighting_every_strategy import NAMES


def nan_batch():
    x, y = batch(7)
    y["t1"][0] = np.nan
    return x, y


def strategy_state(model):
    skipped = id(model.weighting.skipped_updates)
    return [
        np.array(ops.convert_to_numpy(v.value))
        for v in model.weighting.variables
        if id(v) != skipped
    ]


def model_state(model):
    return [np.array(ops.convert_to_numpy(v.value)) for v in model.trainable_variables]


@pytest.mark.parametrize("name", list(NAMES))
def test_a_nan_batch_is_skipped_as_if_absent_under_loss_scaling(name):
    runs = {}
    for with_nan in (True, False):
        model = shared_trunk_model()
        model.compile(
            optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.02)),
            loss="mse",
            weighting=NAMES[name](),
            run_eagerly=run_eagerly(name),
        )
        x0, y0 = batch(0)
        x2, y2 = batch(2)
        xs = [x0, nan_batch()[0], x2] if with_nan else [x0, x2]
        ys = [y0, nan_batch()[1], y2] if with_nan else [y0, y2]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(Batches(xs, ys), epochs=1, shuffle=False, verbose=0)
        messages = [
            str(w.message) for w in caught if "kept its state" in str(w.message)
        ]
        runs[with_nan] = (strategy_state(model), model_state(model), messages, model)
    with_nan, without = runs[True], runs[False]
    for got, want in zip(with_nan[0] + with_nan[1], without[0] + without[1]):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)
    assert int(ops.convert_to_numpy(with_nan[3].weighting.skipped_updates.value)) == 1
    assert len(with_nan[2]) == 1 and repr(with_nan[3].weighting.name) in with_nan[2][0]
    assert without[2] == []


@pytest.mark.parametrize("name", STATEFUL)
def test_the_state_stays_finite_when_the_model_goes_nan(name):
    model = adam_model(name)
    model.train_on_batch(*batch(0))
    before = strategy_state(model)
    logs = model.train_on_batch(*nan_batch(), return_dict=True)
    assert np.isnan(logs["loss"])  # What TerminateOnNaN reads.
    for got, want in zip(strategy_state(model), before):
        np.testing.assert_array_equal(got, want)
    model.train_on_batch(*batch(2))  # The model is NaN now; the state stays.
    assert all(np.all(np.isfinite(v)) for v in strategy_state(model))
    assert int(ops.convert_to_numpy(model.weighting.skipped_updates.value)) == 2


class Batches(keras.utils.PyDataset):
    """The given batches, in order."""

    def __init__(self, xs, ys):
        super().__init__()
        self.xs, self.ys = xs, ys

    def __len__(self):
        return len(self.xs)

    def __getitem__(self, index):
        return self.xs[index], self.ys[index]
