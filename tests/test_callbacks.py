"""Standard Keras callbacks on a `JointModel`, keyed on per-submodel logs."""

import csv

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk
from tests.conftest import BACKEND


def make_joint(learning_rate=0.01):
    def mlp(name):
        return keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(8, activation="tanh"),
                keras.layers.Dense(1),
            ],
            name=name,
        )

    joint = jk.JointModel({"m1": mlp("a"), "m2": mlp("b")})
    joint.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=0.5),
        loss={"m1": "mse", "m2": "mae"},
        metrics={"m2": ["mse"]},
    )
    return joint


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, rng.normal(size=(n, 1)).astype("float32")


def flat_weights(model):
    return np.concatenate([ops.convert_to_numpy(v).ravel() for v in model.weights])


def fit(joint, callbacks, epochs=3, **kwargs):
    x, y = data()
    return joint.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        validation_data=data(seed=1),
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
        **kwargs,
    )


def test_model_checkpoint_best_on_a_submodel_metric(tmp_path):
    path = tmp_path / "best.keras"
    # mode="auto" finds that `val_m2_mse` goes down.
    checkpoint = keras.callbacks.ModelCheckpoint(
        path, monitor="val_m2_mse", save_best_only=True
    )
    history = fit(make_joint(learning_rate=0.2), [checkpoint], epochs=4)
    best = keras.models.load_model(path)
    logs = best.evaluate(*data(seed=1), verbose=0, return_dict=True)
    np.testing.assert_allclose(
        logs["m2_mse"], min(history.history["val_m2_mse"]), rtol=1e-5
    )


def test_model_checkpoint_weights_only(tmp_path):
    path = tmp_path / "epoch{epoch}.weights.h5"
    joint = make_joint()
    fit(joint, [keras.callbacks.ModelCheckpoint(path, save_weights_only=True)])
    fresh = make_joint()
    fresh.load_weights(tmp_path / "epoch3.weights.h5")
    np.testing.assert_array_equal(flat_weights(fresh), flat_weights(joint))


def test_early_stopping_on_a_submodel_validation_loss():
    stop = keras.callbacks.EarlyStopping(
        monitor="val_m1_loss", min_delta=1e9, patience=1
    )
    history = fit(make_joint(), [stop], epochs=10)
    assert len(history.history["loss"]) == 2
    assert stop.stopped_epoch == 1


def test_reduce_lr_on_plateau_on_a_submodel_metric():
    reduce = keras.callbacks.ReduceLROnPlateau(
        monitor="val_m2_mse", min_delta=1e9, patience=0, factor=0.5
    )
    joint = make_joint(learning_rate=0.08)
    fit(joint, [reduce], epochs=3)
    # Epoch 1 sets the reference; epochs 2 and 3 never improve by 1e9.
    np.testing.assert_allclose(
        float(ops.convert_to_numpy(joint.optimizer.learning_rate)), 0.02
    )


def test_learning_rate_scheduler():
    rates = [0.1, 0.05, 0.02]
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch: rates[epoch])
    history = fit(make_joint(), [scheduler], epochs=3)
    np.testing.assert_allclose(history.history["learning_rate"], rates, rtol=1e-6)


def test_csv_logger_has_per_submodel_columns(tmp_path):
    path = tmp_path / "log.csv"
    fit(make_joint(), [keras.callbacks.CSVLogger(str(path))], epochs=2)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert {"m1_loss", "m2_loss", "m2_mse", "val_m1_loss", "val_m2_mse"} <= set(rows[0])


def test_terminate_on_nan():
    joint = make_joint()
    x, y = data()
    y[20:] = np.nan
    # The strategy says at the epoch's end that it kept its state.
    with pytest.warns(UserWarning, match="kept its state in 1 training step"):
        history = joint.fit(
            x,
            {"m1": y, "m2": np.zeros_like(y)},
            batch_size=16,
            epochs=3,
            shuffle=False,
            verbose=0,
            callbacks=[keras.callbacks.TerminateOnNaN()],
        )
    assert joint.stop_training
    assert len(history.history.get("loss", [])) <= 1


class InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("Interrupted")


def test_backup_and_restore_resumes_to_the_uninterrupted_weights(tmp_path):
    keras.utils.set_random_seed(3)
    uninterrupted = make_joint()
    fit(uninterrupted, [], epochs=4)

    keras.utils.set_random_seed(3)
    joint = make_joint()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="Interrupted"):
        fit(joint, [backup, InterruptAt(2)], epochs=4)

    keras.utils.set_random_seed(123)  # a new process would start anew
    restarted = make_joint()
    history = fit(
        restarted,
        [keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))],
        epochs=4,
    )
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 only
    np.testing.assert_array_equal(flat_weights(restarted), flat_weights(uninterrupted))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorBoard events: TensorFlow")
def test_tensorboard_writes_per_submodel_scalars(tmp_path):
    import tensorflow as tf

    fit(make_joint(), [keras.callbacks.TensorBoard(str(tmp_path))], epochs=2)
    tags = set()
    for event_file in (tmp_path / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(v.tag for v in event.summary.value)
    assert {"epoch_loss", "epoch_m1_loss", "epoch_m2_loss", "epoch_m2_mse"} <= tags


@pytest.mark.skipif(BACKEND != "tensorflow", reason="SavedModel export: TensorFlow")
def test_export_serving_artifact_matches_predict(tmp_path):
    import tensorflow as tf

    joint = make_joint()
    fit(joint, [], epochs=1)
    joint.export(str(tmp_path / "served"))
    served = tf.saved_model.load(str(tmp_path / "served"))
    x, _ = data()
    outputs = served.serve(x)
    for name, pred in joint.predict(x, verbose=0).items():
        np.testing.assert_allclose(outputs[name].numpy(), pred, rtol=1e-5, atol=1e-6)
