"""The backend-specific part of a joint model's step, one module per backend.

The step itself (`joint_keras/_step/step.py`) is written once, in `keras.ops`;
what needs a backend's own autodiff or training loop is here. The backend is
chosen once, at import, as Keras chooses it. Every module has the same
functions:

- `run_step(model, step, args)`: runs `step(data)` the way the backend's
  Keras trainer calls a step (JAX: statelessly, returning the new state).
- `vjp(fn, variables, probes=(), state=None)`: runs the forward pass
  `fn(probes) -> (outputs, aux)` once and returns `(outputs, aux,
  linearization)`, whose `pullback(cotangents, indices)` and
  `jacobian(key, indices, vectorized)` give gradients from that one pass. `state` is a
  callable returning every variable of the step (JAX threads them).
- `input_gradient(fn, inputs, state=None)`: the gradient of `sum(fn(inputs))`
  with respect to `inputs`, itself differentiable (a gradient penalty).
- `apply(optimizer, grads, variables)`: the optimizer update.
- `cross_replica_sum(x)`: the sum over the replicas of a `tf.distribute`
  step (the identity elsewhere).
- `keep_state_on_error(model)`: a context manager that keeps the model's
  variables when a step raises (JAX; a no-op elsewhere).
- `accelerated()`: whether steps run on a GPU or TPU rather than the CPU.
"""

import functools
import importlib

import keras

_module = importlib.import_module(f"joint_keras.backend.{keras.backend.backend()}")

run_step = _module.run_step
vjp = _module.vjp
apply = _module.apply
input_gradient = _module.input_gradient
cross_replica_sum = _module.cross_replica_sum
keep_state_on_error = _module.keep_state_on_error
accelerated = _module.accelerated


def keeping_state(method, in_submodel_order=False):
    """A joint model's `method` under `keep_state_on_error`; with
    `in_submodel_order`, its dict result in submodel order (JAX flattens
    dicts in sorted key order)."""

    @functools.wraps(method)
    def wrapper(model, *args, **kwargs):
        with keep_state_on_error(model):
            outputs = method(model, *args, **kwargs)
        if in_submodel_order:
            return {name: outputs[name] for name in model.submodels}
        return outputs

    return wrapper


__all__ = [
    "accelerated",
    "apply",
    "cross_replica_sum",
    "input_gradient",
    "keep_state_on_error",
    "keeping_state",
    "run_step",
    "vjp",
]
