"""`JointLoss`: a loss term computed from several submodels' outputs."""

import keras


@keras.saving.register_keras_serializable(package="joint_keras")
class JointLoss:
    """A weighted loss term over the outputs of several submodels.

    `fn(y_true, y_pred)` gets the targets as given to `fit()` (or `None`)
    and the dict of every submodel's output, and returns a scalar. It is
    added to the total loss as `weight * fn(y_true, y_pred)` and logged
    unweighted as `{name}_loss`.

    By default the term's gradient reaches every variable it depends on.
    With `updates`, only the variables of the listed submodels are moved by
    it; the others act as fixed functions (gradients still flow *through*
    them). This is how opposite objectives share one `fit()`: in a GAN the
    discriminator's term updates only `"disc"` and the generator's term,
    computed through the discriminator, updates only `"gen"`.

    Args:
        fn: Callable `fn(y_true, y_pred) -> scalar`, written with
            `keras.ops` so that it runs on every backend.
        weight: Non-negative finite float. Defaults to 1.0.
        name: String used in the logs. Defaults to the name of `fn`.
        updates: Optional list of submodel names whose variables this term
            updates. `None` (default) updates every variable it reaches.
            A variable shared with a submodel outside the list is updated
            too: it belongs to a listed submodel.

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

    def __init__(self, fn, weight=1.0, name=None, updates=None):
        if not callable(fn):
            raise TypeError(
                f"`fn` must be callable. Received: fn={fn!r} of type "
                f"{type(fn).__name__}"
            )
        self.fn = fn
        self.weight = weight
        self.name = name or _name_of(fn)
        self.updates = _standardize_updates(updates)

    def __call__(self, y_true, y_pred):
        return self.fn(y_true, y_pred)

    def term_config(self):
        """The config entries every joint loss has: weight, name, updates."""
        return {"weight": self.weight, "name": self.name, "updates": self.updates}

    def get_config(self):
        return {
            "fn": keras.saving.serialize_keras_object(self.fn),
            **self.term_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["fn"] = keras.saving.deserialize_keras_object(config["fn"])
        return cls(**config)

    def __repr__(self):
        updates = "" if self.updates is None else f", updates={self.updates}"
        return f"JointLoss({self.name!r}, weight={self.weight}{updates})"


def _standardize_updates(updates):
    if updates is None:
        return None
    if isinstance(updates, str):
        updates = [updates]
    if not isinstance(updates, (list, tuple)) or not updates:
        raise ValueError(
            "`updates` must be a non-empty list of submodel names, or None. "
            f"Received: updates={updates!r}"
        )
    for name in updates:
        if not isinstance(name, str):
            raise TypeError(
                "`updates` must list submodel names (strings). "
                f"Received: updates={updates!r}"
            )
    return list(updates)


def _name_of(fn):
    name = getattr(fn, "name", None) or getattr(fn, "__name__", None)
    if not name or name == "<lambda>":
        name = type(fn).__name__
    return name
