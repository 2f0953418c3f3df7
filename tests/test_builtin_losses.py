"""Built-in joint losses against their formulas, computed in NumPy."""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests import reference


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def kl(p, q):
    return np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))


@pytest.mark.parametrize("from_logits", [False, True])
def test_mutual_kl_matches_its_formula(from_logits):
    rng = np.random.default_rng(0)
    logits = {m: rng.normal(size=(8, 5)).astype("float32") for m in "abc"}
    outputs = logits if from_logits else {m: softmax(z) for m, z in logits.items()}
    loss = jk.losses.MutualKL(["a", "b", "c"], temperature=2.0, from_logits=from_logits)
    p = {m: softmax(z / 2.0) for m, z in logits.items()}
    pairs = [(i, j) for i in "abc" for j in "abc" if i != j]
    want = 4.0 * np.mean([kl(p[j], p[i]) for i, j in pairs])
    got = ops.convert_to_numpy(
        loss(None, {m: ops.convert_to_tensor(o) for m, o in outputs.items()})
    )
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_mutual_kl_trains_through_joint_model_like_a_hand_step():
    def net(name):
        return keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(3, activation="softmax")], name=name
        )

    a, b = net("a"), net("b")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.integers(0, 3, size=(16,))
    variables = reference.unique_variables(a, b)

    def total():
        pa, pb = a(x), b(x)
        ce = keras.losses.sparse_categorical_crossentropy
        la, lb = ops.log(pa), ops.log(pb)
        mutual = 0.5 * (
            ops.mean(ops.sum(ops.stop_gradient(pb) * (ops.stop_gradient(lb) - la), -1))
            + ops.mean(
                ops.sum(ops.stop_gradient(pa) * (ops.stop_gradient(la) - lb), -1)
            )
        )
        return ops.mean(ce(y, pa)) + ops.mean(ce(y, pb)) + 0.5 * mutual

    want_loss, want_weights = reference.sgd_step(total, variables, 0.1)
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy",
        joint_losses=[jk.losses.MutualKL(["a", "b"], weight=0.5)],
    )
    logs = joint.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    for got, want in zip(reference.weights_of(a, b), want_weights):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_mutual_kl_round_trips_and_checks_arguments():
    loss = jk.losses.MutualKL(["a", "b"], temperature=3.0, weight=0.2)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert isinstance(restored, jk.losses.MutualKL)
    assert restored.get_config() == loss.get_config()
    with pytest.raises(ValueError, match="at least two"):
        jk.losses.MutualKL(["a"])
    with pytest.raises(ValueError, match="`temperature` must be positive"):
        jk.losses.MutualKL(["a", "b"], temperature=0.0)


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def classifier(name, inputs=4, classes=3):
    return keras.Sequential(
        [keras.Input((inputs,)), keras.layers.Dense(classes, activation="softmax")],
        name=name,
    )


def tensors(outputs):
    return {m: ops.convert_to_tensor(o) for m, o in outputs.items()}


def round_trip(loss):
    return keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("from_logits", [False, True])
def test_distillation_matches_its_formula(temperature, from_logits):
    rng = np.random.default_rng(2)
    logits = {m: rng.normal(size=(8, 5)).astype("float32") for m in ("t", "s")}
    outputs = logits if from_logits else {m: softmax(z) for m, z in logits.items()}
    loss = jk.losses.Distillation(
        "t", "s", temperature=temperature, from_logits=from_logits
    )
    p_t, p_s = softmax(logits["t"] / temperature), softmax(logits["s"] / temperature)
    want = temperature**2 * kl(p_t, p_s)
    got = ops.convert_to_numpy(loss(None, tensors(outputs)))
    np.testing.assert_allclose(got, want, rtol=1e-4)


# The teacher is trainable but gets no gradient from any term: Keras warns
# about it on the backends that report missing gradients as `None`.
@pytest.mark.filterwarnings("ignore:Gradients do not exist:UserWarning")
def test_distillation_moves_the_student_only_like_a_hand_step():
    teacher, student = classifier("teacher"), classifier("student")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.integers(0, 3, size=(16,))
    teacher_before = reference.weights_of(teacher)
    student_before = reference.weights_of(student)
    # The teacher's soft targets, as constants: by hand, the teacher is
    # not differentiated at all.
    soft = ops.convert_to_tensor(
        softmax(np.log(ops.convert_to_numpy(teacher(x))) / 2.0)
    )

    def total():
        ps = student(x)
        ce = ops.mean(keras.losses.sparse_categorical_crossentropy(y, ps))
        log_q = ops.log_softmax(ops.log(ps) / 2.0, axis=-1)
        distill = ops.mean(ops.sum(soft * (ops.log(soft) - log_q), axis=-1))
        return ce + 4.0 * distill

    want_loss, want_weights = reference.sgd_step(
        total, reference.unique_variables(student), 0.1
    )
    joint = jk.JointModel({"teacher": teacher, "student": student})
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={"student": "sparse_categorical_crossentropy"},
        joint_losses=[jk.losses.Distillation("teacher", "student", temperature=2.0)],
    )
    logs = joint.train_on_batch(x, {"student": y}, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    np.testing.assert_allclose(
        logs["student_loss"] + logs["distillation_loss"], want_loss, rtol=1e-5
    )
    for got, want in zip(reference.weights_of(teacher), teacher_before):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(reference.weights_of(student), want_weights):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # The student did move.
    assert not np.allclose(want_weights[0], student_before[0])


def test_distillation_round_trips_and_checks_arguments():
    loss = jk.losses.Distillation(
        "t", "s", temperature=3.0, from_logits=True, weight=0.5, name="kd"
    )
    restored = round_trip(loss)
    assert isinstance(restored, jk.losses.Distillation)
    assert restored.get_config() == loss.get_config()
    assert restored.get_config()["teacher"] == "t"
    assert restored.get_config()["temperature"] == 3.0
    with pytest.raises(ValueError, match=r"two different.*teacher='a', student='a'"):
        jk.losses.Distillation("a", "a")
    with pytest.raises(TypeError, match=r"`teacher` must be.*teacher=3 of type int"):
        jk.losses.Distillation(3, "s")
    with pytest.raises(TypeError, match=r"`student`.*student=\['s'\]"):
        jk.losses.Distillation("t", ["s"])
    with pytest.raises(ValueError, match=r"`temperature` must be positive.*=-1"):
        jk.losses.Distillation("t", "s", temperature=-1)
    with pytest.raises(TypeError, match=r"`from_logits` must be a bool.*='yes'"):
        jk.losses.Distillation("t", "s", from_logits="yes")
    outputs = tensors({"t": np.eye(3, dtype="float32")})
    with pytest.raises(ValueError, match=r"submodel 's', which has no output"):
        jk.losses.Distillation("t", "s")(None, outputs)


@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_consistency_matches_its_formula(loss):
    rng = np.random.default_rng(4)
    outputs = {m: rng.normal(size=(8, 3)).astype("float32") for m in "abc"}
    per_sample = {
        "mse": lambda u, v: np.mean(np.square(u - v), axis=-1),
        "mae": lambda u, v: np.mean(np.abs(u - v), axis=-1),
    }[loss]
    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    want = np.mean([np.mean(per_sample(outputs[i], outputs[j])) for i, j in pairs])
    got = ops.convert_to_numpy(
        jk.losses.Consistency(["a", "b", "c"], loss=loss)(None, tensors(outputs))
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)
    two = ops.convert_to_numpy(
        jk.losses.Consistency(["a", "c"], loss=loss)(None, tensors(outputs))
    )
    np.testing.assert_allclose(
        two, np.mean(per_sample(outputs["a"], outputs["c"])), rtol=1e-5
    )


def test_consistency_takes_loss_functions_and_instances():
    rng = np.random.default_rng(5)
    outputs = {m: rng.normal(size=(8, 3)).astype("float32") for m in "ab"}
    want = np.mean(np.abs(outputs["a"] - outputs["b"]))
    for loss in (keras.losses.mean_absolute_error, keras.losses.MeanAbsoluteError()):
        got = jk.losses.Consistency(["a", "b"], loss=loss)(None, tensors(outputs))
        np.testing.assert_allclose(ops.convert_to_numpy(got), want, rtol=1e-5)


def test_consistency_pairs_each_model_once_with_the_earlier_as_target():
    rng = np.random.default_rng(10)
    p = {m: softmax(3 * rng.normal(size=(8, 4))).astype("float32") for m in "abc"}

    def cross_entropy(target, q):
        return np.mean(-np.sum(target * np.log(q), axis=-1))

    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    want = np.mean([cross_entropy(p[i], p[j]) for i, j in pairs])
    swapped = np.mean([cross_entropy(p[j], p[i]) for i, j in pairs])
    assert abs(want - swapped) > 0.1
    loss = jk.losses.Consistency(["a", "b", "c"], loss="categorical_crossentropy")
    got = ops.convert_to_numpy(loss(None, tensors(p)))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_consistency_trains_both_models_like_a_hand_step():
    def net(name):
        return keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(5, activation="tanh"),
                keras.layers.Dense(2),
            ],
            name=name,
        )

    a, b = net("a"), net("b")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    variables = reference.unique_variables(a, b)

    def total():
        pa, pb = a(x), b(x)
        supervised = ops.mean(keras.losses.mean_squared_error(y, pa))
        return supervised + 0.5 * ops.mean(ops.abs(pa - pb))

    want_loss, want_weights = reference.sgd_step(total, variables, 0.1)
    joint = jk.JointModel({"a": a, "b": b})
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={"a": "mse"},
        joint_losses=[jk.losses.Consistency(["a", "b"], loss="mae", weight=0.5)],
    )
    logs = joint.train_on_batch(x, {"a": y}, return_dict=True)
    np.testing.assert_allclose(logs["loss"], want_loss, rtol=1e-5)
    np.testing.assert_allclose(
        logs["a_loss"] + 0.5 * logs["consistency_loss"], want_loss, rtol=1e-5
    )
    for got, want in zip(reference.weights_of(a, b), want_weights):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(
    "loss",
    [
        "huber",
        keras.losses.mean_absolute_error,
        keras.losses.CategoricalCrossentropy(label_smoothing=0.2),
    ],
)
def test_consistency_round_trips(loss):
    term = jk.losses.Consistency(["a", "b", "c"], loss=loss, weight=0.3)
    restored = round_trip(term)
    assert isinstance(restored, jk.losses.Consistency)
    assert restored.get_config() == term.get_config()
    rng = np.random.default_rng(7)
    outputs = tensors({m: softmax(rng.normal(size=(8, 4))) for m in "abc"})
    np.testing.assert_allclose(
        ops.convert_to_numpy(restored(None, outputs)),
        ops.convert_to_numpy(term(None, outputs)),
        rtol=1e-6,
    )


def test_consistency_checks_arguments():
    with pytest.raises(ValueError, match="at least two"):
        jk.losses.Consistency(["a"])
    with pytest.raises(ValueError, match=r"at least two.*models='ab'"):
        jk.losses.Consistency("ab")
    with pytest.raises(ValueError, match=r"`loss` names no Keras loss.*'nope'"):
        jk.losses.Consistency(["a", "b"], loss="nope")
    with pytest.raises(TypeError, match=r"`loss` must be a Keras loss.*loss=3 "):
        jk.losses.Consistency(["a", "b"], loss=3)


def infonce_reference(q, c, temperature, normalize):
    q, c = q.astype("float64"), c.astype("float64")
    if normalize:
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
        c = c / np.linalg.norm(c, axis=-1, keepdims=True)
    logits = q @ c.T / temperature
    return -np.mean(np.diag(log_softmax(logits)))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_infonce_matches_its_formula(normalize, temperature):
    rng = np.random.default_rng(8)
    q = rng.normal(size=(8, 4)).astype("float32")
    c = (q + rng.normal(size=(8, 4))).astype("float32")
    loss = jk.losses.InfoNCE("q", "c", temperature=temperature, normalize=normalize)
    got = ops.convert_to_numpy(loss(None, tensors({"q": q, "c": c})))
    want = infonce_reference(q, c, temperature, normalize)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # The diagonal is the positive: swapping candidates changes the loss.
    assert abs(want - infonce_reference(q, c[::-1], temperature, normalize)) > 1e-2


def test_infonce_all_zero_embedding_gives_no_nan():
    q = np.zeros((4, 3), dtype="float32")
    c = np.eye(4, 3, dtype="float32")
    got = ops.convert_to_numpy(
        jk.losses.InfoNCE("q", "c")(None, tensors({"q": q, "c": c}))
    )
    np.testing.assert_allclose(got, np.log(4.0), rtol=1e-5)


def test_infonce_trains_two_towers_like_a_hand_step():
    user_tower = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(3)], name="user_tower"
    )
    item_tower = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(3)], name="item_tower"
    )
    rng = np.random.default_rng(9)
    xu = rng.normal(size=(16, 5)).astype("float32")
    xi = rng.normal(size=(16, 6)).astype("float32")
    variables = reference.unique_variables(user_tower, item_tower)
    initial = reference.weights_of(user_tower, item_tower)

    def total():
        q, c = user_tower(xu), item_tower(xi)
        q = q / ops.sqrt(ops.sum(q * q, axis=-1, keepdims=True))
        c = c / ops.sqrt(ops.sum(c * c, axis=-1, keepdims=True))
        logits = ops.matmul(q, ops.transpose(c)) / 0.5
        labels = np.arange(16)
        return 0.7 * ops.mean(
            keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
        )

    want_loss, want_weights = reference.sgd_step(total, variables, 0.1)
    joint = jk.JointModel({"user_tower": user_tower, "item_tower": item_tower})
    joint.compile(
        optimizer=keras.optimizers.SGD(0.1),
        joint_losses=[
            jk.losses.InfoNCE("user_tower", "item_tower", temperature=0.5, weight=0.7)
        ],
    )
    # `fit` traces the step for any batch size (on TensorFlow, with an
    # unknown batch dimension); one batch of 16 is one step.
    history = joint.fit(
        {"user_tower": xu, "item_tower": xi},
        None,
        batch_size=16,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    np.testing.assert_allclose(history.history["loss"][0], want_loss, rtol=1e-5)
    np.testing.assert_allclose(
        0.7 * history.history["infonce_loss"][0], want_loss, rtol=1e-5
    )
    for got, want in zip(reference.weights_of(user_tower, item_tower), want_weights):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # Both towers moved.
    for got, before in zip(want_weights, initial):
        assert not np.allclose(got, before)


def test_infonce_round_trips_and_checks_arguments():
    loss = jk.losses.InfoNCE(
        "user", "item", temperature=0.05, normalize=False, weight=2.0, name="nce"
    )
    restored = round_trip(loss)
    assert isinstance(restored, jk.losses.InfoNCE)
    assert restored.get_config() == loss.get_config()
    assert restored.get_config()["normalize"] is False
    with pytest.raises(ValueError, match=r"two different.*query='u', candidate='u'"):
        jk.losses.InfoNCE("u", "u")
    with pytest.raises(TypeError, match=r"`candidate` must be.*candidate=None"):
        jk.losses.InfoNCE("u", None)
    with pytest.raises(ValueError, match=r"`temperature` must be positive.*=0"):
        jk.losses.InfoNCE("u", "i", temperature=0)
    with pytest.raises(TypeError, match=r"`normalize` must be a bool.*normalize=1 "):
        jk.losses.InfoNCE("u", "i", normalize=1)
    outputs = tensors(
        {"u": np.ones((4, 2, 3), "float32"), "i": np.ones((4, 3), "float32")}
    )
    with pytest.raises(ValueError, match=r"shape \(batch, dim\).*'u'.*\(4, 2, 3\)"):
        jk.losses.InfoNCE("u", "i")(None, outputs)
