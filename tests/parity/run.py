"""Trains fixed `JointModel`s on the backend of this process and saves the
numbers, for `tests/test_parity.py` to compare across backends.

Usage: KERAS_BACKEND=jax python -m tests.parity.run OUT.npz

Initial weights and data come from NumPy with a fixed seed, so they are the
same on every backend. Dropout masks come from each backend's own random
generator, which cannot match across backends, so the parity models use
`FixedMaskDropout`: a dropout whose mask is fixed by NumPy, active only in
training. (`tests/test_backend_semantics.py` checks Keras's own `Dropout`
on each backend.)
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import joint_keras as jk  # noqa: E402

STEPS = 6
BATCH = 16


class FixedMaskDropout(keras.layers.Layer):
    """Dropout with a NumPy-fixed mask, applied only when `training`."""

    def __init__(self, rate, width, seed, **kwargs):
        super().__init__(**kwargs)
        mask = np.random.default_rng(seed).random((1, width)) >= rate
        self.mask = mask.astype("float32") / (1.0 - rate)

    def call(self, inputs, training=False):
        if training:
            return inputs * keras.ops.convert_to_tensor(self.mask, inputs.dtype)
        return inputs


def set_numpy_weights(models, seed):
    rng = np.random.default_rng(seed)
    for model in models:
        for v in model.trainable_variables:
            v.assign(rng.normal(scale=0.3, size=v.shape).astype("float32"))


def dense_models():
    shared = keras.layers.Dense(6, activation="tanh", name="shared")
    a = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(6, activation="tanh"),
            shared,
            keras.layers.Dense(1),
        ],
        name="a",
    )
    b = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(6, activation="relu"),
            shared,
            keras.layers.Dense(2),
        ],
        name="b",
    )
    return {"a": a, "b": b}


def batchnorm_dropout_models():
    shared = keras.layers.Dense(6, name="shared")
    a = keras.Sequential(
        [
            keras.Input((5,)),
            # No bias before BatchNormalization: its gradient is exactly
            # zero, and Adam would turn float noise into updates.
            keras.layers.Dense(8, use_bias=False),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.Activation("relu"),
            FixedMaskDropout(0.25, 8, seed=1),
            keras.layers.Dense(6),
            shared,
            keras.layers.Dense(1),
        ],
        name="a",
    )
    b = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(6, activation="tanh"),
            shared,
            keras.layers.BatchNormalization(momentum=0.8, center=False),
            FixedMaskDropout(0.5, 6, seed=2),
            keras.layers.Dense(2),
        ],
        name="b",
    )
    return {"a": a, "b": b}


def data(n=STEPS * BATCH):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype("float32")
    y = {
        "a": rng.normal(size=(n, 1)).astype("float32"),
        "b": rng.normal(size=(n, 2)).astype("float32"),
    }
    return x, y


class StepLosses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rows = []

    def on_train_batch_end(self, batch, logs=None):
        self.rows.append([logs["loss"], logs["a_loss"], logs["b_loss"]])


def run(make_models, optimizer, prefix, results):
    models = make_models()
    set_numpy_weights(models.values(), seed=42)
    joint = jk.JointModel(models)
    joint.compile(
        optimizer=optimizer,
        loss={"a": "mse", "b": "mae"},
        loss_weights={"a": 0.6, "b": 1.5},
        metrics={"b": ["mse"]},
    )
    x, y = data()
    losses = StepLosses()
    joint.fit(
        x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[losses]
    )
    results[f"{prefix}/step_logs"] = np.array(losses.rows)
    evaluation = joint.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)
    for key, value in evaluation.items():
        results[f"{prefix}/eval/{key}"] = np.array(value)
    for i, v in enumerate(joint.weights):
        results[f"{prefix}/weight/{i}/{v.path}"] = keras.ops.convert_to_numpy(v)
    for name, pred in joint.predict(x, verbose=0).items():
        results[f"{prefix}/predict/{name}"] = pred


def main(path):
    results = {}
    run(dense_models, keras.optimizers.SGD(0.05, momentum=0.9), "dense", results)
    run(batchnorm_dropout_models, keras.optimizers.Adam(0.01), "bn_dropout", results)
    np.savez(path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
