"""A joint trainer written by hand from the documented semantics, for the
combination battery (`test_combinations.py`).

Independent of the library's step: it keeps its own NumPy copy of every
weight and optimizer slot, writes each objective out term by term (masked
MSE, the joint loss, Uncertainty's weights and regularizer, MGDA's
min-norm point solved exactly in float64), takes gradients with the
backend's own autodiff (`reference.value_and_grad`) on a twin model's
layers, and applies NumPy SGD or Adam with Keras's formulas.

The layout: a trunk `Dense(4, tanh)` shared by two heads `a` and `b`
(`Dense(1)`), either as two Sequential submodels sharing the trunk layer,
or as a submodel graph `trunk -> a, b`; tasks `a` and `b` (MSE, `b` maybe
partly labelled or absent) and a joint loss `agree = mean((a - b)^2)` of
weight 0.5, routed to `a` or not.

Rules it encodes (README, "What holds where features meet"):
- a variable moves only where a term present in the step reaches it; a
  task whose batch has no labelled row is absent;
- `updates=["a"]` moves only the variables `a` owns (the shared trunk too
  when `a` holds it), a strategy's own variables get every term's
  gradient;
- a plain optimizer counts one step per `apply` with any gradient; each
  optimizer of a dict counts the steps when one of its variables moves.
"""

import itertools

import keras
import numpy as np

from tests import reference

AGREE_WEIGHT = 0.5
LEARNING_RATES = {"sgd": 0.1, "adam": 0.05}
ADAM = (0.9, 0.999, 1e-7)


def build_layers(seed):
    keras.utils.set_random_seed(seed)
    return {
        "trunk": keras.layers.Dense(4, activation="tanh", name="trunk_dense"),
        "a": keras.layers.Dense(1, name="a_dense"),
        "b": keras.layers.Dense(1, name="b_dense"),
    }


def build_submodels(layers, graph):
    """The submodels of the layout, on `layers`."""
    if graph:
        return {
            "trunk": keras.Sequential(
                [keras.Input((3,)), layers["trunk"]], name="trunk"
            ),
            "a": keras.Sequential([keras.Input((4,)), layers["a"]], name="a"),
            "b": keras.Sequential([keras.Input((4,)), layers["b"]], name="b"),
        }
    return {
        name: keras.Sequential(
            [keras.Input((3,)), layers["trunk"], layers[name]], name=name
        )
        for name in ("a", "b")
    }


def min_norm_point(gram):
    """MGDA's weights: the point of the simplex minimizing `w G w`, by
    enumerating supports in float64 (exact for a few tasks)."""
    k = len(gram)
    best, best_value = None, np.inf
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            s = list(support)
            system = np.zeros((size + 1, size + 1))
            system[:size, :size] = gram[np.ix_(s, s)]
            system[:size, size] = system[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            solution = np.linalg.lstsq(system, rhs, rcond=None)[0][:size]
            if np.all(solution >= -1e-12) and abs(solution.sum() - 1) < 1e-9:
                w = np.zeros(k)
                w[s] = np.clip(solution, 0, None)
                value = w @ gram @ w
                if value < best_value - 1e-15:
                    best, best_value = w, value
    return best


class HandTrainer:
    """The reference run of one layout.

    Args:
        layers: Twin layers (same initial weights as the model under test).
        graph: Bool, the trunk as a submodel of a graph.
        layout: `"one"` (the joint loss updates what it reaches),
            `"routed"` (`updates=["a"]`), `"alternating"` (`alternate=[None,
            "a"]`).
        optimizer: `"sgd"`, `"adam"`, or `"per_submodel"`.
        strategy: `None`, `"uncertainty"` or `"mgda"`.
    """

    def __init__(self, layers, graph, layout, optimizer, strategy):
        self.layers, self.graph, self.layout = layers, graph, layout
        self.strategy = strategy
        self.names = {
            "T": layers["trunk"].trainable_variables,
            "A": layers["a"].trainable_variables,
            "B": layers["b"].trainable_variables,
        }
        self.values = {
            key: [np.array(keras.ops.convert_to_numpy(v)) for v in vs]
            for key, vs in self.names.items()
        }
        self.tasks = ["a", "b", "agree"]
        self.base = {"a": 1.0, "b": 1.0, "agree": AGREE_WEIGHT}
        if strategy == "uncertainty":
            self.values["S"] = [np.zeros(3, "float32")]
        # The optimizer of each group of variables, and their step counts.
        if optimizer == "per_submodel":
            first = "trunk" if graph else "a"
            kinds = {"a": "sgd", "b": "adam", "trunk": "adam"}
            owner = {"T": "trunk" if graph else "a", "A": "a", "B": "b", "S": first}
            self.optimizer_of = {key: owner[key] for key in self.values}
            self.kind = {name: kinds[name] for name in set(owner.values())}
        else:
            self.optimizer_of = {key: "one" for key in self.values}
            self.kind = {"one": optimizer}
        self.steps = {name: 0 for name in self.kind}
        self.slots = {
            key: [[np.zeros_like(w), np.zeros_like(w)] for w in ws]
            for key, ws in self.values.items()
        }

    # The forward pass, on the twin layers holding `self.values`.

    def _load(self):
        for key, variables in self.names.items():
            for v, value in zip(variables, self.values[key]):
                v.assign(value)

    def _outputs(self, x):
        features = self.layers["trunk"](x)
        return self.layers["a"](features), self.layers["b"](features)

    def _terms(self, x, ya, yb, labelled_b):
        """Callables of the unweighted task losses present in the step."""
        ops = keras.ops
        x, ya = ops.convert_to_tensor(x), ops.convert_to_tensor(ya)
        yb_filled = None if yb is None else ops.convert_to_tensor(np.nan_to_num(yb))
        mask = ops.convert_to_tensor(labelled_b.astype("float32")[:, None])

        def loss_a():
            return ops.mean(ops.square(self._outputs(x)[0] - ya))

        def loss_b():
            out = self._outputs(x)[1]
            total = ops.sum(ops.square(out - yb_filled) * mask)
            return total / max(float(np.sum(labelled_b)), 1.0)

        def agree():
            a, b = self._outputs(x)
            return ops.mean(ops.square(a - b))

        terms = {"a": loss_a, "agree": agree}
        if yb is not None and labelled_b.any():
            terms["b"] = loss_b
        return terms

    def _weights(self, present):
        if self.strategy != "uncertainty":
            return {t: self.base[t] for t in present}, {}
        s = self.values["S"][0]
        weights = {
            t: self.base[t] * 0.5 * np.exp(-s[self.tasks.index(t)]) for t in present
        }
        return weights, s

    # The reference step.

    def step(self, x, ya, yb):
        labelled_b = (
            np.zeros(len(x), bool) if yb is None else ~np.isnan(yb).any(axis=-1)
        )
        if self.layout == "alternating":
            self._stage(x, ya, yb, labelled_b, ["a", "b"], ["T", "A", "B"])
            self._stage(x, ya, yb, labelled_b, ["agree"], self._owned_by_a())
            return
        if self.strategy == "mgda":
            self._mgda_step(x, ya, yb, labelled_b)
            return
        if self.layout == "routed":
            self._routed_step(x, ya, yb, labelled_b)
            return
        self._stage(x, ya, yb, labelled_b, self.tasks, ["T", "A", "B"])

    def _owned_by_a(self):
        return ["A"] if self.graph else ["T", "A"]

    def _reach(self, task):
        return {"a": {"T", "A"}, "b": {"T", "B"}, "agree": {"T", "A", "B"}}[task]

    def _gradients(self, objective, keys):
        self._load()
        variables = [v for key in keys for v in self.names[key]]
        _, grads = reference.value_and_grad(objective, variables)
        result, i = {}, 0
        for key in keys:
            result[key] = grads[i : i + len(self.names[key])]
            i += len(self.names[key])
        return result

    def _stage(self, x, ya, yb, labelled_b, tasks, keys):
        """One update of `tasks`' weighted sum, moving the variables of
        `keys` that a present task reaches."""
        terms = self._terms(x, ya, yb, labelled_b)
        present = [t for t in tasks if t in terms]
        weights, s = self._weights(present)

        def objective():
            return sum(weights[t] * terms[t]() for t in present)

        reached = [k for k in keys if any(k in self._reach(t) for t in present)]
        grads = self._gradients(objective, reached) if reached else {}
        if self.strategy == "uncertainty" and present:
            grads["S"] = [self._uncertainty_gradient(present, terms, s)]
        self._apply(grads, present)

    def _uncertainty_gradient(self, present, terms, s):
        self._load()
        grad = np.zeros(3, "float32")
        for t in present:
            k = self.tasks.index(t)
            value = float(keras.ops.convert_to_numpy(terms[t]()))
            grad[k] = self.base[t] * 0.5 * (1.0 - np.exp(-s[k]) * value)
        return grad

    def _routed_step(self, x, ya, yb, labelled_b):
        """One forward pass; the submodel losses move what they reach, the
        joint loss only what `a` owns."""
        terms = self._terms(x, ya, yb, labelled_b)
        present = [t for t in self.tasks if t in terms]
        weights, s = self._weights(present)
        supervised = [t for t in present if t != "agree"]
        grads = self._gradients(
            lambda: sum(weights[t] * terms[t]() for t in supervised),
            sorted(set().union(*(self._reach(t) for t in supervised))),
        )
        routed = self._gradients(
            lambda: weights["agree"] * terms["agree"](), self._owned_by_a()
        )
        for key, gs in routed.items():
            grads[key] = [g + h for g, h in zip(grads[key], gs)] if key in grads else gs
        if self.strategy == "uncertainty":
            grads["S"] = [self._uncertainty_gradient(present, terms, s)]
        self._apply(grads, present)

    def _mgda_step(self, x, ya, yb, labelled_b):
        terms = self._terms(x, ya, yb, labelled_b)
        present = [t for t in self.tasks if t in terms]
        per_task = {
            t: self._gradients(
                lambda t=t: self.base[t] * terms[t](), sorted(self._reach(t))
            )
            for t in present
        }
        flat = np.stack(
            [np.concatenate([g.ravel() for g in per_task[t]["T"]]) for t in present]
        ).astype("float64")
        w = min_norm_point(flat @ flat.T)
        grads = {
            "T": [
                sum(w[i] * per_task[t]["T"][j] for i, t in enumerate(present))
                for j in range(len(self.values["T"]))
            ]
        }
        for key in ("A", "B"):
            parts = [per_task[t][key] for t in present if key in per_task[t]]
            if parts:
                grads[key] = [sum(p[j] for p in parts) for j in range(len(parts[0]))]
        self._apply(grads, present)

    def _apply(self, grads, present):
        """NumPy SGD or Adam on `grads` (a dict key -> list of gradients);
        Uncertainty's entries of absent tasks stay as they were."""
        if not grads:
            return
        moved = {self.optimizer_of[key] for key in grads}
        for name in moved:
            self.steps[name] += 1
        for key, gs in grads.items():
            name = self.optimizer_of[key]
            keep = None
            if key == "S":
                keep = np.array([t not in present for t in self.tasks])
            for i, g in enumerate(gs):
                self._update(key, i, np.asarray(g, "float32"), name, keep)

    def _update(self, key, i, grad, name, keep):
        kind, step = self.kind[name], self.steps[name]
        w, (m, v) = self.values[key][i], self.slots[key][i]
        if kind == "sgd":
            new_w, new_m, new_v = w - LEARNING_RATES["sgd"] * grad, m, v
        else:
            b1, b2, eps = ADAM
            new_m = m + (grad - m) * (1 - b1)
            new_v = v + (grad * grad - v) * (1 - b2)
            alpha = LEARNING_RATES["adam"] * np.sqrt(1 - b2**step) / (1 - b1**step)
            new_w = w - alpha * new_m / (np.sqrt(new_v) + eps)
        if keep is not None:
            new_w, new_m, new_v = (
                np.where(keep, old, new)
                for old, new in ((w, new_w), (m, new_m), (v, new_v))
            )
        self.values[key][i] = new_w.astype("float32")
        self.slots[key][i] = [new_m, new_v]
