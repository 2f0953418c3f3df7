"""Small models shared by the tests."""

import keras


def mlp(name, inputs=3, hidden=4, outputs=2):
    """A two-layer tanh MLP named `name`."""
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(outputs),
        ],
        name=name,
    )
