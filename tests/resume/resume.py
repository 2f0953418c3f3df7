"""Loads saved joint models in a fresh process and trains each one epoch on.

Usage: python -m tests.resume.resume DIR CASE [CASE ...]

For each case, loads `DIR/CASE.keras`, trains one epoch on the case's data,
and writes every variable of the model and its optimizer to
`DIR/CASE.npz`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tests.resume import cases  # noqa: E402


def main(directory, names):
    for name in names:
        model = keras.models.load_model(os.path.join(directory, f"{name}.keras"))
        cases.fit_one_epoch(model, name)
        np.savez(os.path.join(directory, f"{name}.npz"), *cases.state(model))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
