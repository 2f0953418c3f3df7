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


def optimizer_state(optimizer, *models):
    """The optimizer variables that hold the models' variables' state."""
    paths = [v.path.replace("/", "_") for m in models for v in m.trainable_variables]
    return [
        np.array(ops.convert_to_numpy(v))
        for v in optimizer.variables
        if any(v.name.startswith(p + "_") for p in paths)
    ]


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        lambda: keras.optimizers.Adam(0.01),
        lambda: {"a": keras.optimizers.Adam(0.01), "b": keras.optimizers.Adam(0.01)},
    ],
    ids=["momentum", "adam", "one_per_submodel"],
)
@pytest.mark.parametrize("marking", ["nan", "mask"])
def test_a_batch_without_labels_leaves_variables_and_optimizer_state(
    optimizer, marking
):
    a, b = mlp("a"), mlp("b")
    x, ya, yb, _ = data()
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(
        optimizer=optimizer(),
        loss="mse",
        missing_label="nan" if marking == "nan" else None,
    )

    def targets(labelled):
        if marking == "nan":
            return {"a": ya, "b": yb if labelled else np.full_like(yb, np.nan)}
        mask = np.full(len(yb), labelled)
        return {"a": ya, "b": {"target": yb, "mask": mask}}

    joint.train_on_batch(x, targets(True))  # momentum / moments now non-zero
    before = reference.weights_of(b)
    state_before = optimizer_state(joint.optimizer, b)
    a_before = reference.weights_of(a)
    for _ in range(2):
        joint.train_on_batch(x, targets(False))
    for got, want in zip(reference.weights_of(b), before):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(optimizer_state(joint.optimizer, b), state_before):
        np.testing.assert_array_equal(got, want)
    assert state_before, "the optimizer keeps state for b"
    assert any(not np.allclose(g, w) for g, w in zip(reference.weights_of(a), a_before))


def test_logged_losses_are_means_over_labelled_rows():
    joint = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
    joint.compile(optimizer="sgd", loss="mse", missing_label="nan")
    x, ya, yb, _ = data(n=32)
    labelled = np.zeros(32, bool)
    labelled[:4] = True  # batch 1 has 4 labelled rows for b, batch 2 none
    yb_nan = np.where(labelled[:, None], yb, np.nan).astype("float32")
    logs = joint.evaluate(
        x, {"a": ya, "b": yb_nan}, batch_size=16, verbose=0, return_dict=True
    )
    pa = ops.convert_to_numpy(joint.submodels["a"](x))
    pb = ops.convert_to_numpy(joint.submodels["b"](x))
    want_b = np.mean(np.mean((pb[labelled] - yb[labelled]) ** 2, axis=-1))
    want_a = np.mean((pa - ya) ** 2)
    np.testing.assert_allclose(logs["b_loss"], want_b, rtol=1e-5)
    np.testing.assert_allclose(logs["a_loss"], want_a, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], want_a + want_b, rtol=1e-5)
    history = joint.fit(
        x, {"a": ya, "b": yb_nan}, batch_size=16, epochs=1, shuffle=False,
        validation_data=(x, {"a": ya, "b": yb_nan}), verbose=0,
    )  # fmt: skip
    pb = ops.convert_to_numpy(joint.submodels["b"](x))
    want_val = np.mean(np.mean((pb[labelled] - yb[labelled]) ** 2, axis=-1))
    np.testing.assert_allclose(history.history["val_b_loss"][0], want_val, rtol=1e-5)
