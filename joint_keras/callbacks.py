"""Callbacks for `JointModel`."""

import keras
import numpy as np


class LossWeightScheduler(keras.callbacks.Callback):
    """Changes the tasks' loss weights at the start of every epoch.

    Like `keras.callbacks.LearningRateScheduler`, for the weights of a
    `JointModel`'s tasks (each submodel's loss and each joint loss). It
    assigns `model.loss_weights_variable`, so training is not recompiled,
    on every backend. The epoch logs get `{task}_weight`.

    Args:
        schedule: Callable `schedule(epoch, weights) -> weights`, where
            `weights` is a dict task name -> float (the current weights)
            and the result a dict with new weights for some or all tasks.
        verbose: Int; 1 prints the new weights.

    Example:

    ```python
    # Ramp the distillation term up over the first 5 epochs.
    ramp = jk.callbacks.LossWeightScheduler(
        lambda epoch, w: {"distillation": min(1.0, (epoch + 1) / 5)}
    )
    model.fit(x, y, epochs=10, callbacks=[ramp])
    ```
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        current = self.model.task_weights
        new = self.schedule(epoch, dict(current))
        if not isinstance(new, dict):
            raise TypeError(
                "The `schedule` of `LossWeightScheduler` must return a dict "
                f"task name -> weight. Received: {new!r}"
            )
        unknown = [name for name in new if name not in current]
        if unknown:
            raise ValueError(
                f"`LossWeightScheduler` got weights for unknown tasks {unknown}; "
                f"tasks are {list(current)}."
            )
        for name, weight in new.items():
            weight = float(weight)
            if not np.isfinite(weight) or weight < 0:
                raise ValueError(
                    "Loss weights must be non-negative and finite; the schedule "
                    f"gave {name!r} the weight {weight!r}."
                )
        current.update({name: float(w) for name, w in new.items()})
        self.model.loss_weights_variable.assign(
            np.array([current[n] for n in self.model.task_names], dtype="float32")
        )
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: LossWeightScheduler setting {current}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for name, weight in self.model.task_weights.items():
                logs[f"{name}_weight"] = weight
