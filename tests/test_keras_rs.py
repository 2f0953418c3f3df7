"""Two-tower retrieval trained with `jk.losses.InfoNCE`, evaluated with
keras-rs's retrieval layer and metric.

Synthetic user-item data with a planted structure: each user prefers one
item (`PREFERRED[u]`), and 90% of the interactions are with it. After
training, keras-rs's `BruteForceRetrieval` over every item's embedding must
put each user's preferred item in the top `K` far more often than chance
(`K / NUM_ITEMS`), measured by keras-rs's `RecallAtK`. The InfoNCE value is
checked against a sampled softmax written out in NumPy.
"""

import keras
import numpy as np
import pytest
from keras import ops

import joint_keras as jk

keras_rs = pytest.importorskip("keras_rs")

NUM_USERS, NUM_ITEMS, DIM, K, TEMPERATURE = 64, 32, 8, 5, 0.1
PREFERRED = np.random.default_rng(0).integers(0, NUM_ITEMS, NUM_USERS)


def interactions(rows, seed):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, NUM_USERS, rows)
    noise = rng.integers(0, NUM_ITEMS, rows)
    items = np.where(rng.random(rows) < 0.9, PREFERRED[users], noise)
    return {"query": users.astype("int32"), "candidate": items.astype("int32")}


def towers():
    return {
        "query": keras.Sequential(
            [keras.Input((), dtype="int32"), keras.layers.Embedding(NUM_USERS, DIM)],
            name="query",
        ),
        "candidate": keras.Sequential(
            [keras.Input((), dtype="int32"), keras.layers.Embedding(NUM_ITEMS, DIM)],
            name="candidate",
        ),
    }


def normalized(x):
    x = np.asarray(x, "float64")
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_infonce_equals_a_sampled_softmax_written_out():
    model = jk.JointModel(towers())
    model.compile(
        optimizer="adam",
        joint_losses=[jk.losses.InfoNCE("query", "candidate", TEMPERATURE)],
    )
    batch = interactions(32, seed=1)
    got = model.evaluate(batch, None, batch_size=32, verbose=0, return_dict=True)
    out = model.predict(batch, batch_size=32, verbose=0)
    logits = normalized(out["query"]) @ normalized(out["candidate"]).T / TEMPERATURE
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    want = -np.mean(np.diag(log_softmax))
    np.testing.assert_allclose(got["infonce_loss"], want, rtol=1e-5)
    np.testing.assert_allclose(got["loss"], want, rtol=1e-5)


def test_two_towers_retrieve_the_planted_items_with_keras_rs():
    model = jk.JointModel(towers())
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        joint_losses=[jk.losses.InfoNCE("query", "candidate", TEMPERATURE)],
    )
    history = model.fit(
        interactions(4096, seed=2), None, batch_size=128, epochs=5, verbose=0
    )
    assert history.history["infonce_loss"][-1] < history.history["infonce_loss"][0]

    items = np.arange(NUM_ITEMS, dtype="int32")
    users = np.arange(NUM_USERS, dtype="int32")
    candidates = normalized(model.submodels["candidate"].predict(items, verbose=0))
    queries = normalized(model.submodels["query"].predict(users, verbose=0))
    retrieval = keras_rs.layers.BruteForceRetrieval(
        candidate_embeddings=ops.convert_to_tensor(candidates, "float32"),
        candidate_ids=ops.convert_to_tensor(items),
        k=K,
    )
    scores, top_ids = retrieval(ops.convert_to_tensor(queries, "float32"))
    top_ids = ops.convert_to_numpy(top_ids)
    # The layer's top K are the K best cosine similarities.
    all_scores = queries @ candidates.T
    np.testing.assert_allclose(
        ops.convert_to_numpy(scores), -np.sort(-all_scores, axis=1)[:, :K], atol=1e-5
    )
    hits = np.mean([PREFERRED[u] in top_ids[u] for u in users])

    recall = keras_rs.metrics.RecallAtK(k=K, name="recall_at_5")
    relevant = np.eye(NUM_ITEMS, dtype="float32")[PREFERRED]
    recall.update_state(relevant, all_scores.astype("float32"))
    recall_at_k = float(ops.convert_to_numpy(recall.result()))
    np.testing.assert_allclose(recall_at_k, hits, atol=1e-6)
    assert recall_at_k > 0.8, (recall_at_k, K / NUM_ITEMS)
