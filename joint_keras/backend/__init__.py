"""Home of the backend-specific step code of `joint_keras`.

`JointModel` does not write its own train/test/predict steps: it plugs its
per-submodel losses and metrics into Keras's `compute_loss` and
`compute_metrics`, and the steps are Keras's own, one per backend
(`keras/src/backend/{tensorflow,jax,torch}/trainer.py`). That keeps the
whole step compiled (`tf.function`, `jax.jit`, or `torch.compile` when
`jit_compile=True`) and honours `steps_per_execution`, `run_eagerly`,
distribution and mixed precision exactly as Keras does.

What cannot be written in `keras.ops` goes here, one module per backend
(`tensorflow.py`, `jax.py`, `torch.py`), each holding only the part the math
requires: for example one gradient per loss term for gradient-combining
strategies. Everything else stays backend-neutral.
"""


def _module():
    import importlib

    import keras

    return importlib.import_module(f"joint_keras.backend.{keras.backend.backend()}")


def train_step(model, *args):
    """Runs the backend's routed train step (one gradient per loss group)."""
    return _module().train_step(model, *args)


def gradient_step(model, *args):
    """Runs the backend's gradient-level step (one gradient per task)."""
    return _module().gradient_step(model, *args)


def cross_replica_sum(x):
    """Sum of `x` over the replicas of a `tf.distribute` step.

    Keras computes each replica's loss on its part of the global batch,
    scaled by `1 / num_replicas`; what a weighting strategy reads (task
    losses, per-task gradients) must be summed across replicas first. JAX
    distribution computes on the global batch already, and PyTorch steps
    run on one device: there `x` is returned as is.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return x
    return _module().cross_replica_sum(x)


def first_replica_batch(iterator):
    """TensorFlow: one batch of a distributed epoch iterator, for a
    symbolic build (see `JointModel._maybe_symbolic_build`)."""
    return _module().first_replica_batch(iterator)


def step_logs(outputs):
    """What a train or test step returns, adjusted for the backend's
    training loop (TensorFlow multi-worker: see `tensorflow.step_logs`)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return outputs
    return _module().step_logs(outputs)
