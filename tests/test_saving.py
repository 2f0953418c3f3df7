"""Saving and loading a `JointModel` as a Keras model, on every backend."""

import zipfile

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk


def shared_pair():
    shared = keras.layers.Dense(3, activation="tanh", name="shared")
    m1 = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5), shared, keras.layers.Dense(2)],
        name="a",
    )
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, activation="relu")(inputs)
    m2 = keras.Model(inputs, keras.layers.Dense(1)(shared(hidden)), name="b")
    return m1, m2, shared


def compiled_joint(optimizer=None):
    m1, m2, _ = shared_pair()
    joint = jk.JointModel({"m1": m1, "m2": m2})
    joint.compile(
        optimizer=optimizer or keras.optimizers.Adam(0.01),
        loss={"m1": "mse", "m2": "mae"},
        loss_weights={"m1": 0.3, "m2": 2.0},
        metrics={"m2": ["mse"]},
    )
    return joint


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = {
        "m1": rng.normal(size=(n, 2)).astype("float32"),
        "m2": rng.normal(size=(n, 1)).astype("float32"),
    }
    return x, y


def numpy_list(variables):
    return [np.array(ops.convert_to_numpy(v)) for v in variables]


def assert_same_values(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_save_and_load_round_trip(tmp_path):
    joint = compiled_joint()
    x, y = data()
    joint.fit(x, y, batch_size=16, epochs=2, verbose=0)
    path = tmp_path / "joint.keras"
    joint.save(path)

    loaded = keras.models.load_model(path)  # no custom_objects needed
    assert isinstance(loaded, jk.JointModel)
    assert list(loaded.submodels) == ["m1", "m2"]
    assert loaded.submodels["m2"].name == "b"
    # The shared layer is still one layer, and one variable set.
    shared1 = loaded.submodels["m1"].get_layer("shared")
    assert shared1 is loaded.submodels["m2"].get_layer("shared")
    assert len(loaded.trainable_variables) == len(joint.trainable_variables)
    assert_same_values(numpy_list(joint.weights), numpy_list(loaded.weights))
    # Compile configuration and optimizer state.
    assert loaded.loss_weights == pytest.approx({"m1": 0.3, "m2": 2.0})
    assert int(ops.convert_to_numpy(loaded.optimizer.iterations)) == 8
    assert_same_values(
        numpy_list(joint.optimizer.variables), numpy_list(loaded.optimizer.variables)
    )
    for name, pred in joint.predict(x, verbose=0).items():
        np.testing.assert_array_equal(loaded.predict(x, verbose=0)[name], pred)
    want = joint.evaluate(x, y, verbose=0, return_dict=True)
    got = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert set(got) == {"loss", "m1_loss", "m2_loss", "m2_mse"}
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6)


def test_training_continued_after_reload_equals_uninterrupted(tmp_path):
    x, y = data()
    keras.utils.set_random_seed(5)
    uninterrupted = compiled_joint()
    uninterrupted.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)

    keras.utils.set_random_seed(5)
    first_half = compiled_joint()
    first_half.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    first_half.save(tmp_path / "half.keras")
    resumed = keras.models.load_model(tmp_path / "half.keras")
    resumed.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)

    np.testing.assert_allclose(
        np.concatenate([w.ravel() for w in numpy_list(resumed.weights)]),
        np.concatenate([w.ravel() for w in numpy_list(uninterrupted.weights)]),
        rtol=1e-6,
        atol=1e-7,
    )


def test_save_weights_and_load_into_a_fresh_model(tmp_path):
    joint = compiled_joint()
    x, y = data()
    joint.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "joint.weights.h5"
    joint.save_weights(path)

    keras.utils.set_random_seed(99)
    fresh = compiled_joint()
    # Built, its optimizer takes the saved state too (unbuilt, Keras skips it
    # with a warning).
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(path)
    assert_same_values(numpy_list(joint.weights), numpy_list(fresh.weights))
    assert_same_values(
        numpy_list(joint.optimizer.variables), numpy_list(fresh.optimizer.variables)
    )
    for name, pred in joint.predict(x, verbose=0).items():
        np.testing.assert_array_equal(fresh.predict(x, verbose=0)[name], pred)


def test_weights_of_a_different_architecture_are_refused(tmp_path):
    joint = compiled_joint()
    path = tmp_path / "joint.weights.h5"
    joint.save_weights(path)
    other = jk.JointModel(
        {
            "m1": keras.Sequential([keras.Input((4,)), keras.layers.Dense(7)]),
            "m2": keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]),
        }
    )
    before = numpy_list(other.weights)
    with pytest.raises(ValueError):
        other.load_weights(path)
    assert_same_values(before, numpy_list(other.weights))


def test_truncated_file_gives_a_clear_error(tmp_path):
    joint = compiled_joint()
    path = tmp_path / "joint.keras"
    joint.save(path)
    data_bytes = path.read_bytes()
    broken = tmp_path / "broken.keras"
    broken.write_bytes(data_bytes[: len(data_bytes) // 2])
    with pytest.raises((ValueError, zipfile.BadZipFile, OSError)):
        keras.models.load_model(broken)


def test_safe_mode_refuses_lambda_unless_asked(tmp_path):
    m1 = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Lambda(lambda t: t * 2.0),
            keras.layers.Dense(1),
        ],
        name="lam",
    )
    m2 = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="plain")
    joint = jk.JointModel({"m1": m1, "m2": m2})
    joint.compile(optimizer="sgd", loss="mse")
    path = tmp_path / "lambda.keras"
    joint.save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        keras.models.load_model(path)
    loaded = keras.models.load_model(path, safe_mode=False)
    x, _ = data()
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0)["m1"], joint.predict(x, verbose=0)["m1"], rtol=1e-6
    )


def test_a_submodel_saves_and_loads_alone(tmp_path):
    joint = compiled_joint()
    x, y = data()
    joint.fit(x, y, epochs=1, verbose=0)
    m2 = joint.submodels["m2"]
    m2.save(tmp_path / "m2.keras")
    loaded = keras.models.load_model(tmp_path / "m2.keras")
    assert not isinstance(loaded, jk.JointModel)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), m2.predict(x, verbose=0)
    )


def test_from_config_keeps_shared_layers_shared():
    joint = compiled_joint()
    clone = jk.JointModel.from_config(joint.get_config())
    assert clone.submodels["m1"].get_layer("shared") is clone.submodels["m2"].get_layer(
        "shared"
    )
    assert clone.submodels["m1"] is not joint.submodels["m1"]


def distillation_pair(seed):
    keras.utils.set_random_seed(seed)
    student = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="tanh"),
         keras.layers.Dense(2)], name="student_net")  # fmt: skip
    teacher = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, activation="tanh"),
         keras.layers.Dense(2)], name="teacher_net")  # fmt: skip
    return student, teacher


@pytest.mark.parametrize("path", ["w.weights.h5", "m.keras"])
def test_weights_are_matched_by_submodel_name_in_any_order(tmp_path, path):
    # Same architectures, so a match by position would load without error.
    student, teacher = distillation_pair(0)
    saved = jk.JointModel({"student": student, "teacher": teacher})
    saved.compile(optimizer="sgd", loss="mse")
    if path.endswith(".keras"):
        saved.save(tmp_path / path)
    else:
        saved.save_weights(tmp_path / path)

    s2, t2 = distillation_pair(1)
    other_order = jk.JointModel({"teacher": t2, "student": s2})
    other_order.compile(optimizer="sgd", loss="mse")
    other_order.load_weights(tmp_path / path)
    for got, want in zip(numpy_list(t2.weights), numpy_list(teacher.weights)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(numpy_list(s2.weights), numpy_list(student.weights)):
        np.testing.assert_array_equal(got, want)


def test_weights_of_other_submodel_names_are_refused_untouched(tmp_path):
    student, teacher = distillation_pair(0)
    saved = jk.JointModel({"student": student, "teacher": teacher})
    saved.save_weights(tmp_path / "w.weights.h5")

    s2, t2 = distillation_pair(1)
    renamed = jk.JointModel({"pupil": s2, "teacher": t2})
    before = numpy_list(renamed.weights)
    with pytest.raises(ValueError, match=r"\['student', 'teacher'\].*\['pupil'"):
        renamed.load_weights(tmp_path / "w.weights.h5")
    assert_same_values(before, numpy_list(renamed.weights))

    s3, t3 = distillation_pair(2)
    extra = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="x")
    three = jk.JointModel({"student": s3, "teacher": t3, "extra": extra})
    three.save_weights(tmp_path / "three.weights.h5")
    two = jk.JointModel(dict(zip(["student", "teacher"], distillation_pair(3))))
    with pytest.raises(ValueError, match="other submodels"):
        two.load_weights(tmp_path / "three.weights.h5")


def test_checkpoint_callbacks_restore_by_name(tmp_path):
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = np.zeros((32, 2), "float32")
    student, teacher = distillation_pair(0)
    first = jk.JointModel({"student": student, "teacher": teacher})
    first.compile(optimizer="sgd", loss="mse")
    path = tmp_path / "best.weights.h5"
    first.fit(x, y, epochs=1, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(path, save_weights_only=True)])  # fmt: skip
    s2, t2 = distillation_pair(1)
    second = jk.JointModel({"teacher": t2, "student": s2})
    second.compile(optimizer="sgd", loss="mse")
    second.load_weights(path)
    assert_same_values(numpy_list(s2.weights), numpy_list(student.weights))
    assert_same_values(numpy_list(t2.weights), numpy_list(teacher.weights))


def test_an_unregistered_function_warns_at_save_and_says_why_at_load(tmp_path):
    def d_loss(y_true, y_pred):  # local: Keras cannot find it when loading
        return ops.mean(y_pred["m1"])

    joint = compiled_joint()
    joint.compile(optimizer="sgd", loss="mse", joint_losses=[jk.JointLoss(d_loss)])
    with pytest.warns(UserWarning, match="Could not locate function 'd_loss'"):
        joint.save(tmp_path / "j.keras")
    with pytest.raises(Exception) as raised:
        keras.models.load_model(tmp_path / "j.keras")
    first_line = str(raised.value).splitlines()[0]
    assert "Could not locate function 'd_loss'" in first_line
    assert "register_keras_serializable" in first_line
