"""Joint models in every documented `compile()` configuration, for the
save / reload / resume tests (`tests/test_resume.py`).

Each case builds its submodels from a seed and compiles them; the parent
process trains and saves, a fresh process (`tests/resume/resume.py`) loads
the file and trains on, and both must end on the same weights.
"""

import keras
import numpy as np
from keras import ops

import joint_keras as jk

ROWS, BATCH = 48, 16

# The other strategies, by name, on three tasks (random task orders matter
# from three on).
SHARED_TRUNK_STRATEGIES = (
    "mgda",
    "cagrad",
    "graddrop",
    "dualproj",
    "imtlg",
    "aligned_mtl",
    "nash_mtl",
    "config",
    "gradvac",
    "fairgrad",
    "famo",
    "dbmtl",
)


@keras.saving.register_keras_serializable(package="joint_keras_tests")
def gen_loss(y_true, y_pred):
    return ops.mean(ops.square(y_pred["b"] - 1.0), axis=-1)


@keras.saving.register_keras_serializable(package="joint_keras_tests")
def every_other_step(step):
    return {"b": ops.equal(ops.mod(step, 2), 0)}


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 4)).astype("float32")
    y = {
        "a": rng.normal(size=(ROWS, 2)).astype("float32"),
        "b": rng.normal(size=(ROWS, 2)).astype("float32"),
    }
    return x, y


def mlp(name, dropout=False, hidden=5):
    layers = [keras.Input((4,)), keras.layers.Dense(hidden, activation="tanh")]
    if dropout:
        # A seed: PyTorch draws unseeded dropout from its global generator.
        layers.append(keras.layers.Dropout(0.3, seed=7))
    layers.append(keras.layers.Dense(2))
    return keras.Sequential(layers, name=name)


def trunk_pair(names=("a", "b")):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, activation="tanh", name="trunk")(inputs)
    return {
        name: keras.Model(inputs, keras.layers.Dense(2, name=f"h{name}")(hidden))
        for name in names
    }


def two_outputs():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, activation="tanh")(inputs)
    outputs = {
        "o1": keras.layers.Dense(2, name="o1")(hidden),
        "o2": keras.layers.Dense(1, name="o2")(hidden),
    }
    return keras.Model(inputs, outputs, name="two")


def frozen_teacher():
    teacher = mlp("teacher", dropout=True, hidden=6)
    teacher.trainable = False
    return teacher


def targets(case):
    """The case's targets `y`."""
    _, y = data()
    if case == "routed_schedule_callable":
        return {"a": y["a"]}
    if case == "frozen_teacher":
        return {"student": y["a"]}
    if case == "missing_labels":
        rows = np.arange(ROWS)[:, None] % 3 == 0
        return dict(y, b=np.where(rows, np.nan, y["b"]).astype("float32"))
    if case == "multi_output":
        return {"two": {"o1": y["a"], "o2": y["b"][:, :1]}, "b": y["b"]}
    if case in SHARED_TRUNK_STRATEGIES:
        return dict(y, c=y["a"] - y["b"])
    return y


def build(case):
    """The case's compiled joint model, the same for every call."""
    keras.utils.set_random_seed(0)
    if case == "adam_update_every":
        model = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
        model.compile(optimizer="adam", loss="mse", update_every={"b": 2})
    elif case == "optimizer_per_submodel":
        model = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
        model.compile(
            optimizer={
                "a": keras.optimizers.Adam(0.01),
                "b": keras.optimizers.SGD(0.1, momentum=0.9),
            },
            loss={"a": "mse", "b": "mae"},
            loss_weights={"a": 0.3, "b": 2.0},
            metrics={"b": ["mse"]},
        )
    elif case == "routed_schedule_callable":
        model = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
        model.compile(
            optimizer={"a": "adam", "b": "adam"},
            loss={"a": "mse"},
            joint_losses=[jk.JointLoss(gen_loss, weight=0.5, updates=["b"])],
            update_every=every_other_step,
        )
    elif case == "dropout":
        model = jk.JointModel({"a": mlp("a", dropout=True), "b": mlp("b")})
        model.compile(optimizer="adam", loss="mse")
    elif case == "frozen_teacher":
        model = jk.JointModel({"teacher": frozen_teacher(), "student": mlp("s")})
        model.compile(
            optimizer="adam",
            loss={"student": "mse"},
            joint_losses=[
                jk.losses.Distillation("teacher", "student", from_logits=True)
            ],
        )
    elif case == "uncertainty_compiled_twice":
        strategy = jk.weighting.Uncertainty()
        model = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
        model.compile(optimizer="adam", loss="mse", weighting=strategy)
        model.compile(optimizer="adam", loss="mse", weighting=strategy)
    elif case in ("rlw", "dwa"):
        model = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
        model.compile(optimizer="adam", loss="mse", weighting=case)
    elif case in ("pcgrad", "gradnorm", "upgrad_trunk"):
        strategy = {
            "pcgrad": lambda: jk.weighting.PCGrad(seed=3),
            "gradnorm": jk.weighting.GradNorm,
            "upgrad_trunk": lambda: jk.weighting.UPGrad(representation="trunk"),
        }[case]()
        model = jk.JointModel(trunk_pair())
        model.compile(optimizer="adam", loss="mse", weighting=strategy)
    elif case in SHARED_TRUNK_STRATEGIES:
        strategy = jk.weighting.get(case)
        model = jk.JointModel(trunk_pair(("a", "b", "c")))
        model.compile(optimizer="adam", loss="mse", weighting=strategy)
    elif case == "missing_labels":
        model = jk.JointModel({"a": mlp("a"), "b": mlp("b")})
        model.compile(optimizer="adam", loss="mse", missing_label="nan")
    elif case == "graph_trunk":
        trunk = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(5, activation="tanh"),
             keras.layers.BatchNormalization()], name="trunk")  # fmt: skip
        heads = {
            n: keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)], name=n)
            for n in ("a", "b")
        }
        graph = {"a": "trunk", "b": "trunk"}
        model = jk.JointModel({"trunk": trunk, **heads}, inputs=graph)
        model.compile(
            optimizer="adam",
            loss={"a": "mse", "b": "mse"},
            loss_weights={"a": 1.0, "b": 0.2},
            weighting=jk.weighting.PCGrad(representation="trunk", seed=2),
        )
    elif case == "multi_output":
        model = jk.JointModel({"two": two_outputs(), "b": mlp("b")})
        model.compile(
            optimizer="adam",
            loss={"two": {"o1": "mse", "o2": "mae"}, "b": "mse"},
            loss_weights={"two": {"o1": 1.0, "o2": 0.5}, "b": 1.0},
        )
    else:
        raise ValueError(case)
    return model


CASES = (
    "adam_update_every",
    "optimizer_per_submodel",
    "routed_schedule_callable",
    "dropout",
    "frozen_teacher",
    "uncertainty_compiled_twice",
    "rlw",
    "dwa",
    "pcgrad",
    "gradnorm",
    "upgrad_trunk",
    "missing_labels",
    "graph_trunk",
    "multi_output",
    *SHARED_TRUNK_STRATEGIES,
)


def fit_one_epoch(model, case):
    x, _ = data()
    y = targets(case)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def state(model):
    """Every variable of the model and its optimizer, as NumPy arrays."""
    variables = list(model.variables) + list(model.optimizer.variables)
    return [np.array(ops.convert_to_numpy(v)) for v in variables]
