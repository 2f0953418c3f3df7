"""JAX: gradients from one linearization of the forward pass (`jax.vjp`).

A JAX step is stateless: `run_step` runs the backend-neutral step inside a
`keras.StatelessScope` holding the step's state, so that the step reads and
assigns variables as on the other backends, and returns the new state.
"""

import contextlib

import jax
import jax.numpy as jnp
import keras


def run_step(model, step, args):
    """Runs `step(data)` as Keras's JAX trainer runs a step: `args` is
    `(state, data)`; returns `(logs, new_state)`."""
    state, data = args
    groups = [model.trainable_variables, model.non_trainable_variables]
    if len(state) == 4:
        groups.append(model.optimizer.variables)
    groups.append(model.metrics_variables)
    mapping = [
        (v, value)
        for variables, values in zip(groups, state)
        for v, value in zip(variables, values)
    ]
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        logs = step(data)
    known = {id(v) for v, _ in mapping}
    if any(key not in known for key in scope.state_mapping):
        raise ValueError(
            "A variable that the joint model does not track was updated "
            "during the step (for example the state of a "
            "`keras.random.SeedGenerator` created outside any layer); on "
            "JAX its update would be lost. Create it inside a layer or "
            "submodel, so that it is part of the model's state."
        )
    new_state = tuple(
        [scope.get_current_value(v) for v in variables] for variables in groups
    )
    return logs, new_state


@contextlib.contextmanager
def keep_state_on_error(model):
    """Keras's JAX trainer detaches variables' values while it trains or
    predicts (to save memory) and reattaches them at the end; an error
    raised in a step (a bad input found while tracing) would leave them
    detached, and the model's weights lost. Reattach them then."""
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


def vjp(fn, variables, probes=(), state=()):
    """Linearizes `fn(probes)` at the current values of `variables`.

    Args:
        fn: Callable `fn(probes) -> (outputs, aux)`, `outputs` a dict of
            tensors to differentiate. It may read and assign any variable
            in `state`; its assignments are kept.
        variables: List of the `keras.Variable`s to differentiate for.
        probes: List of zero tensors `fn` adds to intermediate values, to
            differentiate for those values.
        state: Every variable of the step (all of the model's, the
            optimizer's and the metrics').

    Returns:
        `(outputs, aux, Linearization)`.
    """
    ids = {id(v) for v in variables}
    others = [v for v in state if id(v) not in ids]
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
        `variables[indices]` and every probe."""
        grads, probe_grads = self.vjp_fn(self._full(cotangents))
        return [grads[i] for i in indices], list(probe_grads)

    def jacobian(self, key, indices):
        """Per-row gradients `(rows, *shape)` of the vector `outputs[key]`
        for `variables[indices]` and every probe: all rows' VJPs at once
        under `jax.vmap`."""
        output = self.outputs[key]
        grads, probe_grads = jax.vmap(
            lambda row: self.vjp_fn(self._full({key: row}))
        )(jnp.eye(output.shape[0], dtype=output.dtype))
        return [grads[i] for i in indices], list(probe_grads)


def apply(optimizer, grads, variables):
    """Applies `grads` (aligned with `variables`, `None` for none)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # Its stateful `apply` assigns inside `ops.cond` branches, which
        # `jax.jit` cannot trace: use its stateless form, as Keras does.
        new_variables, new_state = optimizer.stateless_apply(
            [v.value for v in optimizer.variables],
            grads,
            [v.value for v in variables],
        )
        for v, value in zip(variables, new_variables):
            v.assign(value)
        for v, value in zip(optimizer.variables, new_state):
            v.assign(value)
        return
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])


def cross_replica_sum(x):
    return x
