"""`keras.distillation.Distiller` and the equivalent `JointModel` train the
student to the same weights.

The equivalent configuration: the student's loss weighted `alpha` (the
Distiller's `student_loss_weight`), `jk.losses.Distillation(..., T,
from_logits=True)` weighted `1 - alpha`, the teacher frozen. The Distiller's
`LogitsDistillation` is given `keras.losses.KLDivergence()` (an object): with
the string `"kl_divergence"` (its default) Keras 3.15 skips the softmax and
the `T^2` factor.
"""

import keras
import numpy as np

import joint_keras as jk

TEMPERATURE, ALPHA, EPOCHS = 3.0, 0.3, 3


def networks():
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(16, activation="relu"),
         keras.layers.Dense(4)], name="teacher")  # fmt: skip
    student = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(6, activation="tanh"),
         keras.layers.Dense(4)], name="student")  # fmt: skip
    return teacher, student


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5)).astype("float32")
    return x, rng.integers(0, 4, size=(96,))


def test_joint_model_matches_keras_distiller_over_three_epochs():
    x, y = data()
    fit = dict(batch_size=16, epochs=EPOCHS, shuffle=False, verbose=0)
    teacher, student = networks()
    teacher.trainable = False
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
        ),
        student_loss_weight=ALPHA,
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    distiller.fit(x, y, **fit)

    teacher2, student2 = networks()
    teacher2.trainable = False
    joint = jk.JointModel({"teacher": teacher2, "student": student2})
    joint.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss={"student": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
        loss_weights={"student": ALPHA},
        joint_losses=[
            jk.losses.Distillation(
                "teacher", "student", temperature=TEMPERATURE, from_logits=True,
                weight=1.0 - ALPHA,
            )
        ],
    )  # fmt: skip
    joint.fit(x, {"student": y}, **fit)
    for got, want in zip(student2.get_weights(), student.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    for got, want in zip(teacher2.get_weights(), teacher.get_weights()):
        np.testing.assert_array_equal(got, want)
