"""JAX: gradients from one linearization of the forward pass (`jax.vjp`).

A JAX step is stateless: `run_step` runs the backend-neutral step inside a
`keras.StatelessScope` holding the step's state, so that the step reads and
assigns variables as on the other backends, and returns the new state.
"""

import contextlib

import jax
import jax.numpy as jnp
import keras
from jax.extend.core import Literal
from jax.extend.core import jaxpr_as_fun


def run_step(model, step, args):
    """Runs `step(data)` as Keras's JAX trainer runs a step: `args` is
    `(state, data)`; returns `(logs, new_state)`."""
    state, data = args
    groups = [model.trainable_variables, model.non_trainable_variables]
    if len(state) == 4:
        groups.append(model.optimizer.variables)
    groups.append(model.metrics_variables)
    mapping = [(v, x) for vs, xs in zip(groups, state) for v, x in zip(vs, xs)]
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        logs = step(data)
    known = {id(v) for v, _ in mapping}
    if any(key not in known for key in scope.state_mapping):
        raise ValueError(
            "A variable the joint model does not track was updated in the "
            "step (a `keras.random.SeedGenerator` outside any layer or joint "
            "loss?): on JAX its update would be lost. Create it in a layer, "
            "or as an attribute of a `jk.JointLoss` subclass."
        )
    return logs, tuple([scope.get_current_value(v) for v in vs] for vs in groups)


@contextlib.contextmanager
def keep_state_on_error(model):
    """Keras's JAX trainer detaches variables' values while it runs (to save
    memory) and reattaches them at the end: a step that raises (a bad input
    found while tracing) would lose the model's weights. Reattach them."""
    optimizer = getattr(model, "optimizer", None)
    optimizer_variables = list(optimizer.variables) if optimizer else []
    variables = model.variables + optimizer_variables + model.metrics_variables
    values = [v.value for v in variables]
    try:
        yield
    except Exception:
        for v, value in zip(variables, values):
            if not value.is_deleted():
                v.assign(value)
        raise


def vjp(fn, variables, probes=(), state=list):
    """Linearizes `fn(probes)` at the current values of `variables` (see
    `tensorflow.vjp`). `fn` may read and assign any variable in `state()`
    (every variable of the step); its assignments are kept."""
    ids = {id(v) for v in variables}
    others = [v for v in state() if id(v) not in ids]
    current = [(v, v.value) for v in others]

    def pure(values, probe_values):
        mapping = current + list(zip(variables, values))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs, aux = fn(probe_values)
        return outputs, (aux, [scope.get_current_value(v) for v in others])

    outputs, vjp_fn, (aux, updates) = jax.vjp(
        pure, [v.value for v in variables], list(probes), has_aux=True
    )
    for v, value in zip(others, updates):
        v.assign(value)
    return outputs, aux, Linearization(vjp_fn, outputs)


class Linearization:
    """Gradients of a forward pass's outputs, as many as needed."""

    def __init__(self, vjp_fn, outputs):
        self.vjp_fn, self.outputs = vjp_fn, outputs

    def _full(self, cotangents):
        return {
            k: jnp.broadcast_to(jnp.asarray(cotangents.get(k, 0.0), o.dtype), o.shape)
            for k, o in self.outputs.items()
        }

    def pullback(self, cotangents, indices):
        """Gradients of `sum_k cotangents[k] . outputs[k]` for
        `variables[indices]` (`None` where unconnected, as on the other
        backends: `jax.vjp` gives zeros there) and every probe."""
        (grads, probe_grads), connected = _with_dependence(
            lambda c: self.vjp_fn(self._full(c)), cotangents
        )
        grads = [g if connected[0][i] else None for i, g in enumerate(grads)]
        return [grads[i] for i in indices], list(probe_grads)

    def connected(self, key, indices):
        """Whether `outputs[key]` depends on each of `variables[indices]`."""
        _, connected = _with_dependence(
            lambda c: self.vjp_fn(self._full({key: c})), 1.0
        )
        return [connected[0][i] for i in indices]

    def jacobian(self, key, indices, vectorized=True):
        """Per-row gradients `(rows, *shape)` of the vector `outputs[key]`
        for `variables[indices]` and every probe: all rows' VJPs at once
        under `jax.vmap`, or one after another."""
        output = self.outputs[key]
        rows = jnp.eye(output.shape[0], dtype=output.dtype)
        row_vjp = lambda row: self.vjp_fn(self._full({key: row}))  # noqa: E731
        if vectorized:
            grads, probe_grads = jax.vmap(row_vjp)(rows)
        else:
            each = [row_vjp(row) for row in rows]
            grads, probe_grads = jax.tree.map(lambda *g: jnp.stack(g), *each)
        return [grads[i] for i in indices], list(probe_grads)


def _with_dependence(fn, args):
    """`(fn(args), flags)`: `flags` has `fn`'s output structure, each leaf
    whether it depends on `args` (read off the traced jaxpr: a cotangent
    that reaches no variable is a constant zero there)."""
    args = jax.tree.map(jnp.asarray, args)
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(args)
    tainted = set(closed.jaxpr.invars)
    for eqn in closed.jaxpr.eqns:
        if any(not isinstance(v, Literal) and v in tainted for v in eqn.invars):
            tainted.update(eqn.outvars)
    flags = [not isinstance(v, Literal) and v in tainted for v in closed.jaxpr.outvars]
    outputs = jaxpr_as_fun(closed)(*jax.tree.leaves(args))
    structure = jax.tree.structure(shapes)
    return jax.tree.unflatten(structure, outputs), jax.tree.unflatten(structure, flags)


def input_gradient(fn, inputs, state=list):
    """The gradient of `sum(fn(inputs))` with respect to `inputs`, itself
    differentiable (`jax.grad` inside the step's trace, for a gradient
    penalty). `fn` may update any variable in `state()`; the updates are
    kept."""
    current = [(v, v.value) for v in state()]

    def total(values):
        with keras.StatelessScope(state_mapping=current, collect_losses=True) as scope:
            outputs = fn(values)
        return jnp.sum(outputs), [scope.get_current_value(v) for v, _ in current]

    grad, updates = jax.grad(total, has_aux=True)(inputs)
    for (v, _), value in zip(current, updates):
        v.assign(value)
    return grad


def apply(optimizer, grads, variables):
    """Applies `grads` (aligned with `variables`, `None` for none)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # Its stateful `apply` assigns inside `ops.cond` branches, which
        # `jax.jit` cannot trace: use its stateless form, as Keras does.
        new_variables, new_state = optimizer.stateless_apply(
            [v.value for v in optimizer.variables], grads, [v.value for v in variables]
        )
        targets = [*variables, *optimizer.variables]
        for v, value in zip(targets, [*new_variables, *new_state]):
            v.assign(value)
        return
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])


def cross_replica_sum(x):
    return x


def accelerated():
    """Whether the step runs on a GPU or TPU rather than the CPU."""
    return jax.default_backend() != "cpu"
