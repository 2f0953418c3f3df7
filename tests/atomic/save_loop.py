"""Saves a joint model over and over until killed (for
`tests/test_atomic_saving.py`).

Usage: python -m tests.atomic.save_loop MODE DIR

Modes: `save` (`model.save`), `weights` (`model.save_weights`),
`checkpoint` (`ModelCheckpoint(save_best_only=True)` on a loss that keeps
improving), `backup` (`BackupAndRestore(save_freq=1)`). Prints a line after
the first file is complete, then keeps saving.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import joint_keras as jk  # noqa: E402


def model():
    keras.utils.set_random_seed(0)

    def net(name):
        # About 2 MB of weights, so that each save takes a while.
        return keras.Sequential(
            [keras.Input((256,)), keras.layers.Dense(512), keras.layers.Dense(256),
             keras.layers.Dense(1)], name=name)  # fmt: skip

    joint = jk.JointModel({"a": net("a"), "b": net("b")})
    joint.compile(optimizer=keras.optimizers.SGD(1e-4), loss="mse")
    return joint


def data():
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(64, 256)).astype("float32"),
        np.zeros((64, 1), "float32"),
    )


class Announce(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.done = False

    def on_train_batch_end(self, batch, logs=None):
        if not self.done:
            print("ready", flush=True)
            self.done = True


def main(mode, directory):
    joint = model()
    x, y = data()
    if mode in ("save", "weights"):
        path = os.path.join(directory, "m.keras" if mode == "save" else "m.weights.h5")
        save = joint.save if mode == "save" else joint.save_weights
        save(path)
        print("ready", flush=True)
        while True:
            save(path)
    callback = {
        "checkpoint": lambda: keras.callbacks.ModelCheckpoint(
            os.path.join(directory, "best.keras"),
            monitor="loss",
            save_best_only=True,
            save_freq=1,
        ),
        "backup": lambda: jk.callbacks.BackupAndRestore(
            os.path.join(directory, "backup"), save_freq=1
        ),
    }[mode]()
    joint.fit(x, y, batch_size=8, epochs=10**6, verbose=0,
              callbacks=[callback, Announce()])  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
