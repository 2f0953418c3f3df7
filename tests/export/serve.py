"""Loads each exported SavedModel in this fresh process with TensorFlow alone
(`tf.saved_model.load`, as a serving stack does) and writes what `serve`
returns for the inputs saved beside it.

    python -m tests.export.serve DIRECTORY CASE [CASE ...]
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main(directory, cases):
    for case in cases:
        served = tf.saved_model.load(os.path.join(directory, case))
        with np.load(os.path.join(directory, f"{case}-inputs.npz")) as saved:
            # One input is saved as "x", a dict of inputs as "x_{key}".
            x = (
                saved["x"]
                if "x" in saved.files
                else {k[2:]: saved[k] for k in saved.files}
            )
        outputs = served.serve(x)
        np.savez(
            os.path.join(directory, f"{case}-served.npz"),
            **{name: np.asarray(value) for name, value in outputs.items()},
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
