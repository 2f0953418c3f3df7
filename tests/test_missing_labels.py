"""Partially labelled data: unlabelled rows add nothing, means are over the
labelled rows; checked against hand-written steps."""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference
from tests.models import mlp


def data(n=16):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype("float32")
    ya = rng.normal(size=(n, 2)).astype("float32")
    yb = rng.normal(size=(n, 2)).astype("float32")
    labelled = np.arange(n) % 3 != 0  # a third of the rows have no label for b
    return x, ya, yb, labelled


def hand_step(a, b, x, ya, yb, labelled):
    def total():
        pb = b(x)[labelled]
        return ops.mean(keras.losses.mean_squared_error(ya, a(x))) + ops.mean(
            keras.losses.mean_squared_error(yb[labelled], pb)
        )

    return reference.sgd_step(total, reference.unique_variables(a, b), 0.1)


def check(joint, a, b, y, want, missing_label=None, x=None):
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        metrics={"b": ["mae"]},
        missing_label=missing_label,
    )
    logs = joint.train_on_batch(x, y, return_dict=True)
    want_loss, want_weights = want
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    for got, w in zip(reference.weights_of(a, b), want_weights):
        np.testing.assert_allclose(got, w, atol=1e-6)
    return logs


def test_nan_labels_are_skipped_and_the_mean_is_over_labelled_rows():
    a, b = mlp("a"), mlp("b")
    x, ya, yb, labelled = data()
    pred_b = np.asarray(ops.convert_to_numpy(b(x)))
    want_mae = np.mean(np.abs(yb[labelled] - pred_b[labelled]))
    want = hand_step(a, b, x, ya, yb, labelled)
    yb_nan = yb.copy()
    yb_nan[~labelled, 1] = np.nan  # one NaN makes the whole row unlabelled
    logs = check(
        jk.JointModel({"a": a, "b": b}), a, b, {"a": ya, "b": yb_nan}, want, "nan", x
    )
    np.testing.assert_allclose(logs["b_mae"], want_mae, rtol=1e-5)


def test_a_mask_in_y_marks_unlabelled_rows():
    a, b = mlp("a"), mlp("b")
    x, ya, yb, labelled = data()
    want = hand_step(a, b, x, ya, yb, labelled)
    y = {"a": ya, "b": {"target": yb, "mask": labelled}}
    check(jk.JointModel({"a": a, "b": b}), a, b, y, want, x=x)


def test_a_batch_without_labels_leaves_the_submodel_untouched():
    a, b = mlp("a"), mlp("b")
    x, ya, yb, _ = data()
    before_b = reference.weights_of(b)
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", missing_label="nan")
    logs = joint.train_on_batch(
        x, {"a": ya, "b": np.full_like(yb, np.nan)}, return_dict=True
    )
    assert logs["b_loss"] == 0.0 and np.isfinite(logs["loss"])
    for got, want in zip(reference.weights_of(b), before_b):
        np.testing.assert_array_equal(got, want)


def test_fit_and_evaluate_with_partial_labels_stay_finite():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    joint.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss="mse",
        metrics=["mae"],
        missing_label="nan",
    )
    x, ya, yb, labelled = data(n=96)
    yb[~labelled] = np.nan
    history = joint.fit(
        x, {"a": ya, "b": yb}, batch_size=16, epochs=3, validation_split=0.25, verbose=0
    )
    for key, values in history.history.items():
        assert np.all(np.isfinite(values)), key
    assert history.history["b_loss"][-1] < history.history["b_loss"][0]


def test_missing_label_errors():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    with pytest.raises(ValueError, match="`missing_label` must be None or 'nan'"):
        joint.compile(loss="mse", missing_label="zero")
