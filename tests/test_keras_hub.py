"""A keras-hub backbone as the shared trunk of two task heads.

A tiny `keras_hub.models.BertBackbone` built from an explicit config
(random weights, no download) is the trunk of a `JointModel` graph; two
heads read its pooled output. The token ids, segment ids and padding mask
(a dict) go to the trunk only. It trains with `fit()`, and a `.keras` file
reloaded in a fresh process gives the same predictions.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import joint_keras as jk
from tests.conftest import BACKEND

try:
    import keras_hub
except ImportError as error:  # keras-hub 0.32 does not import on Keras 3.16.dev
    pytest.skip(
        f"keras-hub does not import with Keras {keras.version()}: {error}",
        allow_module_level=True,
    )

ROOT = pathlib.Path(__file__).resolve().parents[1]
VOCABULARY, LENGTH, HIDDEN = 50, 12, 16


def model():
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=1,
        num_heads=2,
        hidden_dim=HIDDEN,
        intermediate_dim=32,
        max_sequence_length=LENGTH,
    )
    trunk = keras.Model(backbone.input, backbone.output["pooled_output"], name="trunk")
    heads = {
        "sentiment": keras.Sequential(
            [keras.Input((HIDDEN,)), keras.layers.Dense(1, activation="sigmoid")],
            name="sentiment",
        ),
        "length": keras.Sequential(
            [keras.Input((HIDDEN,)), keras.layers.Dense(1)], name="length"
        ),
    }
    joint = jk.JointModel(
        {"trunk": trunk, **heads}, inputs={"sentiment": "trunk", "length": "trunk"}
    )
    joint.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={"sentiment": "binary_crossentropy", "length": "mse"},
        loss_weights={"sentiment": 1.0, "length": 0.1},
    )
    return joint


def data(rows=64):
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, LENGTH + 1, rows)
    mask = np.arange(LENGTH)[None, :] < lengths[:, None]
    token_ids = np.where(mask, rng.integers(1, VOCABULARY, (rows, LENGTH)), 0)
    x = {
        "token_ids": token_ids.astype("int32"),
        "segment_ids": np.zeros((rows, LENGTH), "int32"),
        "padding_mask": mask,
    }
    y = {
        "sentiment": (token_ids[:, :1] > VOCABULARY // 2).astype("float32"),
        "length": lengths[:, None].astype("float32"),
    }
    return x, y


RELOAD = """
import json, sys
import keras, numpy as np
import joint_keras
from tests.test_keras_hub import data
model = keras.models.load_model(sys.argv[1])
x, _ = data()
out = model.predict(x, verbose=0)
np.savez(sys.argv[2], **out)
print(json.dumps(sorted(out)))
"""


def test_a_keras_hub_backbone_is_a_shared_trunk_and_reloads_in_a_fresh_process(
    tmp_path,
):
    joint = model()
    x, y = data()
    history = joint.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert {"sentiment_loss", "length_loss"} <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]
    want = joint.predict(x, verbose=0)
    assert set(want) == {"trunk", "sentiment", "length"}

    joint.save(tmp_path / "bert_heads.keras")
    done = subprocess.run(
        [sys.executable, "-c", RELOAD, str(tmp_path / "bert_heads.keras"),
         str(tmp_path / "out.npz")],
        cwd=ROOT,
        env=dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == sorted(want)
    got = np.load(tmp_path / "out.npz")
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-6)
