"""`model.export()` for serving, for every layout the README shows: one
input shared by the submodels, a dict of inputs, a trunk feeding heads (the
submodel graph), and a GAN whose generator is fed by `jk.Noise`. The
SavedModel, loaded with TensorFlow alone in a fresh process, serves what
`predict()` gives (the generator's noise included: the export holds the
seed state, and `predict()` after it draws the same numbers). On the
backends Keras exports a SavedModel from: TensorFlow and JAX."""

import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests.conftest import BACKEND
from tests.test_resume import run_module

pytestmark = pytest.mark.skipif(
    BACKEND == "torch", reason="Keras exports a SavedModel from TensorFlow and JAX"
)


def dense(name, inputs, outputs=1):
    import keras

    return keras.Sequential(
        [keras.Input((inputs,)), keras.layers.Dense(outputs, activation="tanh")],
        name=name,
    )


def layouts():
    rng = np.random.default_rng(0)
    x3 = rng.normal(size=(5, 3)).astype("float32")
    x2 = rng.normal(size=(5, 2)).astype("float32")
    return {
        "shared_x": (jk.JointModel({"a": dense("a", 3), "b": dense("b", 3, 2)}), x3),
        "dict_x": (
            jk.JointModel({"a": dense("a", 3), "b": dense("b", 2)}),
            {"a": x3, "b": x2},
        ),
        "graph": (
            jk.JointModel(
                {
                    "trunk": dense("trunk", 3, 4),
                    "h": dense("h", 4),
                    "g": dense("g", 4, 2),
                },
                inputs={"h": "trunk", "g": "trunk"},
            ),
            x3,
        ),
        "noise_gan": (
            jk.JointModel(
                {"gen": dense("gen", 4, 2), "disc": dense("disc", 2)},
                inputs={
                    "gen": jk.Noise((4,), seed=3),
                    "disc": jk.Concat("gen", jk.INPUT),
                },
            ),
            x2,
        ),
    }


def test_every_layout_exports_and_serves_what_predict_gives(tmp_path):
    expected = {}
    for case, (model, x) in layouts().items():
        model.export(str(tmp_path / case), verbose=False)
        expected[case] = model.predict(x, verbose=0)
        if isinstance(x, dict):
            np.savez(
                tmp_path / f"{case}-inputs.npz", **{f"x_{k}": v for k, v in x.items()}
            )
        else:
            np.savez(tmp_path / f"{case}-inputs.npz", x=x)
    run_module("tests.export.serve", tmp_path, *expected)
    for case, want in expected.items():
        with np.load(tmp_path / f"{case}-served.npz") as served:
            assert sorted(served.files) == sorted(want)
            for name, value in want.items():
                np.testing.assert_allclose(
                    served[name], ops.convert_to_numpy(value), rtol=1e-5, atol=1e-6,
                    err_msg=f"{case}: {name}",
                )  # fmt: skip


def test_a_model_no_submodel_of_which_takes_x_asks_for_a_signature(tmp_path):
    model = jk.JointModel({"gen": dense("gen", 4)}, inputs={"gen": jk.Noise((4,))})
    with pytest.raises(ValueError, match="pass `input_signature` to `export\\(\\)`"):
        model.export(str(tmp_path / "gen"))
