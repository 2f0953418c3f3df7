"""`JointLoss`: a loss term computed from several submodels' outputs."""

import keras


@keras.saving.register_keras_serializable(package="joint_keras")
class JointLoss:
    """A weighted loss term over the outputs of several submodels.

    `fn(y_true, y_pred)` gets the targets as given to `fit()` (or `None`)
    and the dict of every submodel's output, and returns a scalar. It is
    added to the total loss as `weight * fn(y_true, y_pred)` and logged
    unweighted as `{name}_loss`.

    Args:
        fn: Callable `fn(y_true, y_pred) -> scalar`, written with
            `keras.ops` so that it runs on every backend.
        weight: Non-negative finite float. Defaults to 1.0.
        name: String used in the logs. Defaults to the name of `fn`.

    Example:

    ```python
    def agreement(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_pred["a"] - y_pred["b"]))

    model.compile(
        optimizer="adam",
        loss="mse",
        joint_losses=[jk.JointLoss(agreement, weight=0.5)],
    )
    ```
    """

    def __init__(self, fn, weight=1.0, name=None):
        if not callable(fn):
            raise TypeError(
                f"`fn` must be callable. Received: fn={fn!r} of type "
                f"{type(fn).__name__}"
            )
        self.fn = fn
        self.weight = weight
        self.name = name or _name_of(fn)

    def __call__(self, y_true, y_pred):
        return self.fn(y_true, y_pred)

    def get_config(self):
        return {
            "fn": keras.saving.serialize_keras_object(self.fn),
            "weight": self.weight,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["fn"] = keras.saving.deserialize_keras_object(config["fn"])
        return cls(**config)

    def __repr__(self):
        return f"JointLoss({self.name!r}, weight={self.weight})"


def _name_of(fn):
    name = getattr(fn, "name", None) or getattr(fn, "__name__", None)
    if not name or name == "<lambda>":
        name = type(fn).__name__
    return name
