"""Callbacks for `JointModel`."""

import warnings

import keras

from joint_keras import _compat


class LossWeightScheduler(keras.callbacks.Callback):
    """Changes the tasks' loss weights at the start of every epoch.

    Like `keras.callbacks.LearningRateScheduler`, for the weights of a
    `JointModel`'s tasks (each submodel's loss and each joint loss). It
    calls `model.set_task_weights`, which checks the weights as `compile()`
    does, and needs no recompiling, on every backend. The epoch logs get
    `{task}_weight`.

    Args:
        schedule: Callable `schedule(epoch, weights) -> weights`, where
            `weights` is a dict task name -> float (the current weights)
            and the result a dict with new weights for some or all tasks.
        verbose: Int; 1 prints the new weights.

    Example:

    ```python
    model = jk.JointModel(
        {
            "a": keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]),
            "b": keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]),
        }
    )
    model.compile(optimizer="adam", loss="mse")
    # Ramp task "b" up over the first 5 epochs.
    ramp = jk.callbacks.LossWeightScheduler(
        lambda epoch, w: {"b": min(1.0, (epoch + 1) / 5)}
    )
    x, y = np.random.rand(64, 4), np.random.rand(64, 1)
    model.fit(x, y, epochs=10, callbacks=[ramp], verbose=0)
    model.task_weights  # {"a": 1.0, "b": 1.0}
    ```
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        new = self.schedule(epoch, dict(self.model.task_weights))
        if not isinstance(new, dict):
            raise TypeError(
                "The `schedule` of `LossWeightScheduler` must return a dict "
                f"task name -> weight. Received: {new!r}"
            )
        self.model.set_task_weights(new)
        if self.verbose:
            print(
                f"\nEpoch {epoch + 1}: LossWeightScheduler setting "
                f"{self.model.task_weights}."
            )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for name, weight in self.model.task_weights.items():
                logs[f"{name}_weight"] = weight


class BackupAndRestore(_compat.AtomicBackupMetadata, keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore`, with every file written atomically.

    The same arguments and behaviour as Keras's callback. The weights file
    is atomic with any `JointModel`; this one also writes its small
    training-metadata file atomically (Keras's writes it in place, so a
    process killed during that write stops the next run with a
    `JSONDecodeError`). Resuming gives the uninterrupted run's weights
    exactly when the backup was taken at the end of an epoch
    (`save_freq="epoch"`): with `save_freq=N` the interrupted epoch starts
    again from its first batch, as in Keras.

    Example:

    ```python
    import tempfile

    model = jk.JointModel(
        {
            "a": keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]),
            "b": keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]),
        }
    )
    model.compile(optimizer="adam", loss="mse")
    x, y = np.random.rand(64, 4), np.random.rand(64, 1)
    backup = jk.callbacks.BackupAndRestore(tempfile.mkdtemp())
    model.fit(x, y, epochs=3, callbacks=[backup], verbose=0)
    ```
    """


class _StrategyEpochEnd(keras.callbacks.Callback):
    """At the end of every epoch, lets an epoch-based strategy (such as
    `DWA`) roll its statistics, and warns if training steps with non-finite
    losses or gradients left the strategy's state as it was."""

    def on_train_begin(self, logs=None):
        self.skipped = self._skipped()

    def on_epoch_end(self, epoch, logs=None):
        strategy = self.model.weighting
        if strategy.needs_epoch_end:
            strategy.on_epoch_end()
        skipped = self._skipped()
        if skipped > self.skipped:
            warnings.warn(
                f"Epoch {epoch + 1}: the weighting strategy {strategy.name!r} "
                f"kept its state in {skipped - self.skipped} training step(s) "
                "whose task losses or gradients were NaN or infinite (it never "
                "stores a non-finite value); the model's own update is Keras's "
                "(`keras.callbacks.TerminateOnNaN` stops on a NaN `loss`).",
                stacklevel=2,
            )
        self.skipped = skipped

    def _skipped(self):
        # Read as a tensor: a variable's `.value` is a per-replica value
        # under `tf.distribute`.
        skipped = keras.ops.convert_to_tensor(self.model.weighting.skipped_updates)
        return int(keras.ops.convert_to_numpy(skipped))


def with_strategy_callbacks(callbacks, model):
    """`fit()`'s `callbacks` (a list or a `keras.callbacks.CallbackList`),
    with the callback `model`'s weighting strategy needs added first."""
    strategy = model.weighting
    if strategy is None:
        return callbacks
    if not isinstance(callbacks, keras.callbacks.CallbackList):
        return [_StrategyEpochEnd()] + list(callbacks or [])
    if not any(isinstance(c, _StrategyEpochEnd) for c in callbacks.callbacks):
        callback = _StrategyEpochEnd()
        callback.set_model(model)
        callbacks.callbacks.insert(0, callback)
    return callbacks
