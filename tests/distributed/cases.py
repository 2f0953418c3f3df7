"""Small joint models trained the same way on one device or distributed.

`tests/test_distributed.py` runs `python -m tests.distributed.run MODE OUT`
in a subprocess (devices are configured before the backend starts) and
compares each case's final weights and logs with a one-device run on the
same global batches.
"""

import keras
import numpy as np

import joint_keras as jk

GLOBAL_BATCH = 16
STEPS_PER_EPOCH = 4
EPOCHS = 3
NUM_ROWS = GLOBAL_BATCH * STEPS_PER_EPOCH

CASES = (
    "fixed",
    "routed",
    "uncertainty",
    "dwa",
    "gradnorm",
    "pcgrad",
    "upgrad_trunk",
    "famo",
    "nash_mtl",
    "graddrop",
)
# What each case compiles, besides `loss="mse"`.
_COMPILE = {
    "fixed": lambda: dict(
        optimizer=keras.optimizers.Adam(0.05),
        loss_weights={"a": 0.7, "b": 0.3},
        joint_losses=[jk.losses.Consistency(["a", "b"], weight=0.2)],
        metrics=["mae"],
    ),
    "routed": lambda: dict(
        optimizer={"a": keras.optimizers.Adam(0.05), "b": keras.optimizers.SGD(0.1)},
        joint_losses=[
            jk.losses.Consistency(["a", "b"], weight=0.2, updates=["b"]),
        ],
        update_every={"b": 2},
    ),
    "uncertainty": lambda: dict(
        optimizer=keras.optimizers.Adam(0.05), weighting=jk.weighting.Uncertainty()
    ),
    "dwa": lambda: dict(optimizer=keras.optimizers.SGD(0.1), weighting="dwa"),
    "gradnorm": lambda: dict(optimizer=keras.optimizers.SGD(0.1), weighting="gradnorm"),
    "pcgrad": lambda: dict(
        optimizer=keras.optimizers.SGD(0.1), weighting=jk.weighting.PCGrad(seed=1)
    ),
    "upgrad_trunk": lambda: dict(
        optimizer=keras.optimizers.SGD(0.1),
        weighting=jk.weighting.UPGrad(representation="trunk"),
    ),
    "famo": lambda: dict(optimizer=keras.optimizers.Adam(0.05), weighting="famo"),
    "nash_mtl": lambda: dict(optimizer=keras.optimizers.SGD(0.1), weighting="nash_mtl"),
    "graddrop": lambda: dict(
        optimizer=keras.optimizers.SGD(0.1), weighting=jk.weighting.GradDrop(seed=1)
    ),
}


def data():
    """`(x, y)`: NUM_ROWS rows, two regression targets."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_ROWS, 5)).astype("float32")
    y = {
        "a": (x[:, :1] * 2.0 + 0.1 * rng.normal(size=(NUM_ROWS, 1))),
        "b": np.sin(x[:, 1:2]) - x[:, :1],
    }
    return x, {k: v.astype("float32") for k, v in y.items()}


def build(case):
    """A compiled `JointModel` of two heads on a shared trunk, with weights
    set from NumPy so that every run starts from the same point."""
    inputs = keras.Input((5,))
    trunk = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8, activation="tanh")], name="trunk"
    )
    hidden = trunk(inputs)
    a = keras.Model(inputs, keras.layers.Dense(1, name="head_a")(hidden), name="a")
    b_hidden = keras.layers.Dense(4, activation="tanh", name="hidden_b")(hidden)
    b = keras.Model(inputs, keras.layers.Dense(1, name="head_b")(b_hidden), name="b")
    rng = np.random.default_rng(1)
    for model in (a, b):
        for v in model.trainable_variables:
            v.assign(rng.normal(scale=0.5, size=v.shape).astype("float32"))
    model = jk.JointModel({"a": a, "b": b})
    model.compile(loss="mse", **_COMPILE[case]())
    return model


def train(case, fit_data=None, **fit_kwargs):
    """Trains `case` and returns `(initial, weights, logs)`: the model's
    variables as NumPy arrays (strategy state included) before and after,
    and the last epoch's logs."""
    model = build(case)
    initial = [keras.ops.convert_to_numpy(v) for v in model.weights]
    if fit_data is None:
        x, y = data()
        fit_data = dict(x=x, y=y, batch_size=GLOBAL_BATCH, shuffle=False)
    history = model.fit(**fit_data, epochs=EPOCHS, verbose=0, **fit_kwargs)
    weights = [keras.ops.convert_to_numpy(v) for v in model.weights]
    logs = {k: float(v[-1]) for k, v in history.history.items()}
    return initial, weights, logs
