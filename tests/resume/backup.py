"""Trains the `dropout` case to the end with `BackupAndRestore`, in a fresh
process after an interrupted run, and saves the final state.

Usage: python -m tests.resume.backup DIR EPOCHS
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import joint_keras as jk  # noqa: E402
from tests.resume import cases  # noqa: E402


def main(directory, epochs):
    model = cases.build("dropout")
    x, _ = cases.data()
    backup = jk.callbacks.BackupAndRestore(os.path.join(directory, "backup"))
    model.fit(x, cases.targets("dropout"), batch_size=cases.BATCH, epochs=epochs,
              shuffle=False, verbose=0, callbacks=[backup])  # fmt: skip
    np.savez(os.path.join(directory, "final.npz"), *cases.state(model))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
