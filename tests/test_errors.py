"""Bad input gives a clear error that names the argument and the submodel."""

import math

import keras
import numpy as np
import pytest

import joint_keras as jk


def make_model(name, inputs=4):
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(1)], name=name)


def joint_pair():
    return jk.JointModel({"model1": make_model("a"), "model2": make_model("b")})


def data(n=16):
    return np.ones((n, 4), "float32"), np.ones((n, 1), "float32")


@pytest.mark.parametrize("submodels", [{}, []])
def test_empty_submodels(submodels):
    with pytest.raises(ValueError, match="at least one model"):
        jk.JointModel(submodels)


def test_submodels_of_the_wrong_type():
    with pytest.raises(TypeError, match="`submodels` must be a dict"):
        jk.JointModel(make_model("a"))


@pytest.mark.parametrize("not_a_model", [lambda x: x, keras.layers.Dense(1), "model"])
def test_non_keras_model_is_named(not_a_model):
    with pytest.raises(TypeError, match=r"submodels\['model2'\].*keras.Model"):
        jk.JointModel({"model1": make_model("a"), "model2": not_a_model})


def test_non_keras_model_in_a_list_is_named_by_position():
    with pytest.raises(TypeError, match=r"submodels\[1\]"):
        jk.JointModel([make_model("a"), object()])


def test_duplicate_names_in_a_list():
    with pytest.raises(ValueError, match="'same'"):
        jk.JointModel([make_model("same"), make_model("same")])


@pytest.mark.parametrize("name", [1, ""])
def test_names_must_be_non_empty_strings(name):
    with pytest.raises(TypeError, match="non-empty strings"):
        jk.JointModel({name: make_model("a")})


@pytest.mark.parametrize("name", ["val", "val_model"])
def test_names_that_collide_with_validation_logs(name):
    with pytest.raises(ValueError, match="collide with validation logs"):
        jk.JointModel({name: make_model("a")})


@pytest.mark.parametrize("argument", ["loss", "metrics", "weighted_metrics"])
def test_compile_dict_key_that_names_no_submodel(argument):
    joint = joint_pair()
    value = {"model1": "mse", "model3": "mse"}
    if argument != "loss":
        value = {"model1": ["mae"], "model3": ["mae"]}
    kwargs = {"loss": "mse", argument: value}
    with pytest.raises(
        ValueError, match=f"`{argument}` has keys that name no submodel: \\['model3'\\]"
    ):
        joint.compile(optimizer="sgd", **kwargs)


def test_loss_weights_key_that_names_no_submodel():
    with pytest.raises(ValueError, match="`loss_weights` has keys.*'model3'"):
        joint_pair().compile(loss="mse", loss_weights={"model3": 1.0})


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf, -math.inf])
def test_negative_or_non_finite_loss_weight(bad):
    with pytest.raises(ValueError, match="non-negative and finite.*'model2'"):
        joint_pair().compile(loss="mse", loss_weights={"model1": 1.0, "model2": bad})


@pytest.mark.parametrize("bad", ["0.5", True, None, [1.0]])
def test_loss_weight_that_is_not_a_number(bad):
    with pytest.raises(TypeError, match="`loss_weights` must be numbers.*'model1'"):
        joint_pair().compile(loss="mse", loss_weights={"model1": bad})


def test_loss_weights_list_of_the_wrong_length():
    with pytest.raises(ValueError, match="one entry per submodel"):
        joint_pair().compile(loss="mse", loss_weights=[1.0])


def test_loss_weight_for_a_submodel_without_loss():
    with pytest.raises(ValueError, match="'model2', but `loss` gives it no loss"):
        joint_pair().compile(loss={"model1": "mse"}, loss_weights={"model2": 1.0})


def test_y_dict_with_unknown_keys():
    joint = joint_pair()
    joint.compile(optimizer="sgd", loss="mse")
    x, y = data()
    with pytest.raises(
        ValueError, match="`y` has keys that name no submodel: \\['modle2'\\]"
    ):
        joint.fit(x, {"model1": y, "modle2": y}, verbose=0)


def test_sample_weight_dict_with_unknown_keys():
    joint = joint_pair()
    joint.compile(optimizer="sgd", loss="mse")
    x, y = data()
    with pytest.raises(ValueError, match="`sample_weight` has keys.*'other'"):
        joint.train_on_batch(x, y, sample_weight={"other": np.ones(16)})


def test_x_dict_partly_keyed_by_submodel_names():
    joint = joint_pair()
    joint.compile(optimizer="sgd", loss="mse")
    x, y = data()
    with pytest.raises(
        ValueError, match="one entry per submodel; missing: \\['model2'\\]"
    ):
        joint.fit({"model1": x, "extra": x}, y, verbose=0)


def test_shared_layer_with_incompatible_shapes_names_the_submodel():
    shared = keras.layers.Dense(3, name="shared_dense")
    model1 = keras.Sequential([keras.layers.Dense(8), shared], name="m1")
    model2 = keras.Sequential([keras.layers.Dense(5), shared], name="m2")
    joint = jk.JointModel({"model1": model1, "model2": model2})
    joint.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError) as info:
        joint.fit(np.ones((8, 4), "float32"), np.ones((8, 3), "float32"), verbose=0)
    message = str(info.value)
    assert "Submodel 'model2'" in message
    assert "shared_dense" in message and "same shape" in message


def test_fit_before_compile():
    with pytest.raises(ValueError, match="compile"):
        joint_pair().fit(*data(), verbose=0)


@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_supervised_losses_without_targets_raise_on_every_backend(method):
    joint = joint_pair()
    joint.compile(optimizer="sgd", loss="mse")
    x, _ = data()
    with pytest.raises(ValueError, match="no submodel with a `loss` has targets"):
        getattr(joint, method)(x, None, verbose=0)


def test_gradient_cosine_logs_are_unambiguous_names():
    # `grad_cos_{a}_{b}` could not tell (a_b, c) from (a, b_c).
    from joint_keras._logs.trackers import cosine_pair_name

    assert cosine_pair_name("a_b", "c") != cosine_pair_name("a", "b_c")
    with pytest.raises(ValueError, match="may not contain '/'"):
        jk.JointModel({"a/b": make_model("a")})
