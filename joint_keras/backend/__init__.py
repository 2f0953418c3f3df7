"""The backend-specific part of a joint model's step, one module per backend.

The step itself (`joint_keras/_step.py`) is written once, in `keras.ops`;
what needs a backend's own autodiff or training loop is here. The backend is
chosen once, at import, as Keras chooses it. Every module has the same
functions:

- `run_step(model, step, args)`: runs `step(data)` the way the backend's
  Keras trainer calls a step (JAX: statelessly, returning the new state).
- `vjp(fn, variables, probes=(), state=())`: runs the forward pass
  `fn(probes) -> (outputs, aux)` once and returns `(outputs, aux,
  linearization)`, whose `pullback(cotangents, indices)` and
  `jacobian(key, indices)` give gradients from that one pass.
- `apply(optimizer, grads, variables)`: the optimizer update.
- `cross_replica_sum(x)`: the sum over the replicas of a `tf.distribute`
  step (the identity elsewhere).
- `keep_state_on_error(model)`: a context manager that keeps the model's
  variables when a step raises (JAX; a no-op elsewhere).
"""

import importlib

import keras

_module = importlib.import_module(f"joint_keras.backend.{keras.backend.backend()}")

run_step = _module.run_step
vjp = _module.vjp
apply = _module.apply
cross_replica_sum = _module.cross_replica_sum
keep_state_on_error = _module.keep_state_on_error

__all__ = ["apply", "cross_replica_sum", "keep_state_on_error", "run_step", "vjp"]
