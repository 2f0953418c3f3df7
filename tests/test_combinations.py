"""The features where they meet, against a trainer written by hand.

Parametrized over: the trunk shared by two Sequential submodels or as a
submodel of a graph; the joint loss updating what it reaches, routed to
`a` (`updates=["a"]`, one forward pass) or alternating (`alternate=[None,
"a"]`); one SGD, one Adam, or an optimizer per submodel; `b` fully
labelled, partly labelled (a batch with no labelled row among them), or
absent from `y`; no strategy, a loss-level one (Uncertainty, trainable
state) and a gradient-level one (MGDA, which refuses routing). Each runs
three `train_on_batch` steps and must end on the weights, and the step
counts, of `tests/hand_trainer.py` (NumPy optimizers, float64 MGDA).
"""

import itertools

import keras
import numpy as np
import pytest

import joint_keras as jk
from tests import hand_trainer
from tests.hand_trainer import AGREE_WEIGHT
from tests.hand_trainer import LEARNING_RATES

# Long (126 compiled models), on the Keras API the rest of the suite uses.
pytestmark = pytest.mark.heavy

ROWS = 8
SEED = 3


def agree(y_true, y_pred):
    return keras.ops.mean(keras.ops.square(y_pred["a"] - y_pred["b"]))


def batches(targets):
    rng = np.random.default_rng(0)
    result = []
    for step in range(3):
        x = rng.normal(size=(ROWS, 3)).astype("float32")
        ya = rng.normal(size=(ROWS, 1)).astype("float32")
        yb = rng.normal(size=(ROWS, 1)).astype("float32")
        if targets == "partly":
            # Half the rows labelled, then none, then two.
            unlabelled = [range(0, ROWS, 2), range(ROWS), range(2, ROWS)][step]
            yb[list(unlabelled)] = np.nan
        result.append((x, ya, None if targets == "absent" else yb))
    return result


def optimizer_for(kind, graph):
    def make(name):
        if name == "sgd":
            return keras.optimizers.SGD(LEARNING_RATES["sgd"])
        return keras.optimizers.Adam(LEARNING_RATES["adam"])

    if kind != "per_submodel":
        return make(kind)
    if graph:
        return {"trunk": make("adam"), "a": make("sgd"), "b": make("adam")}
    return {"a": make("sgd"), "b": make("adam")}


def joint_model(graph, layout, optimizer, strategy, targets):
    layers = hand_trainer.build_layers(SEED)
    submodels = hand_trainer.build_submodels(layers, graph)
    inputs = {"a": "trunk", "b": "trunk"} if graph else None
    model = jk.JointModel(submodels, inputs=inputs)
    updates = None if layout == "one" else ["a"]
    model.compile(
        optimizer=optimizer_for(optimizer, graph),
        loss={"a": "mse", "b": "mse"},
        joint_losses=[jk.JointLoss(agree, weight=AGREE_WEIGHT, updates=updates)],
        missing_label="nan" if targets == "partly" else None,
        weighting=strategy,
        alternate=[None, "a"] if layout == "alternating" else None,
        jit_compile=False,
    )
    return model, layers


CASES = [
    case
    for case in itertools.product(
        [False, True],
        ["one", "routed", "alternating"],
        ["sgd", "adam", "per_submodel"],
        ["labelled", "partly", "absent"],
        [None, "uncertainty", "mgda"],
    )
    if not (case[4] == "mgda" and case[1] != "one")
]


def case_id(case):
    graph, layout, optimizer, targets, strategy = case
    return "-".join(
        [
            "graph" if graph else "shared",
            layout,
            optimizer,
            targets,
            strategy or "fixed",
        ]
    )


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_joint_step_matches_the_hand_written_trainer(case):
    graph, layout, optimizer, targets, strategy = case
    model, layers = joint_model(graph, layout, optimizer, strategy, targets)
    twin = hand_trainer.build_layers(SEED)
    hand_trainer.build_submodels(twin, graph)
    hand = hand_trainer.HandTrainer(twin, graph, layout, optimizer, strategy)
    for x, ya, yb in batches(targets):
        y = {"a": ya} if yb is None else {"a": ya, "b": yb}
        model.train_on_batch(x, y)
        hand.step(x, ya, yb)
    for key, layer in (("T", "trunk"), ("A", "a"), ("B", "b")):
        for got, want in zip(layers[layer].trainable_variables, hand.values[key]):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(got), want, atol=2e-5, err_msg=key
            )
    if strategy == "uncertainty":
        got = keras.ops.convert_to_numpy(model.weighting.log_variances.value)
        np.testing.assert_allclose(got, hand.values["S"][0], atol=2e-5)
    optimizers = getattr(model.optimizer, "optimizers", [model.optimizer])
    names = sorted(hand.steps) if len(optimizers) > 1 else ["one"]
    steps = [int(keras.ops.convert_to_numpy(o.iterations.value)) for o in optimizers]
    assert steps == [hand.steps[n] for n in _optimizer_order(names, graph)]


def _optimizer_order(names, graph):
    if names == ["one"]:
        return names
    return ["trunk", "a", "b"] if graph else ["a", "b"]


@pytest.mark.parametrize("layout", ["routed", "alternating"])
def test_gradient_level_strategies_refuse_routing(layout):
    with pytest.raises(ValueError, match="does not go with joint losses that set"):
        joint_model(False, layout, "sgd", "mgda", "labelled")
