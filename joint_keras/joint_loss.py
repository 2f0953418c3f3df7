"""`JointLoss`: a loss term computed from several submodels' outputs."""

import keras
from keras import ops

from joint_keras import _compat


@keras.saving.register_keras_serializable(package="joint_keras")
class JointLoss:
    """A weighted loss term over the outputs of several submodels.

    `fn(y_true, y_pred)` receives the targets exactly as given to `fit()`
    (a tensor, list or dict; `None` when there are none) and the dict of
    every submodel's output, keyed by submodel name. It returns either one
    scalar, used as is, or one value per sample (shape `(batch,)` or
    `(batch, ...)`), reduced as a `keras.losses.Loss` reduces: the sum of
    the values times their sample weights, divided by the number of values
    (`"sum_over_batch_size"`). The sample weights are `fit()`'s
    `sample_weight` when it is one array, or its entry under this term's
    `name` when it is a dict; a scalar result cannot be weighted.

    The term is added to the total loss as `weight * value` and logged
    unweighted as `{name}_loss`.

    By default the term's gradient reaches every variable it depends on.
    With `updates`, only the variables of the listed submodels are moved by
    it; the others act as fixed functions (gradients still flow *through*
    them). This is how opposite objectives share one `fit()`: in a GAN the
    discriminator's term updates only `"disc"` and the generator's term,
    computed through the discriminator, updates only `"gen"`.

    Args:
        fn: Callable `fn(y_true, y_pred)` returning a scalar or per-sample
            values, written with `keras.ops` so that it runs on every
            backend.
        weight: Non-negative finite float. Defaults to 1.0.
        name: String used in the logs. Defaults to the name of `fn`.
        updates: Optional list of submodel names whose variables this term
            updates. `None` (default) updates every variable it reaches.
            A variable shared with a submodel outside the list is updated
            too: it belongs to a listed submodel.
        with_context: Bool. If `True`, `fn` is called as
            `fn(y_true, y_pred, context)`, where `context` gives the
            submodels (`context.submodels`), each submodel's entry of the
            input `x` (`context.inputs`), and
            `context.input_gradient(fn, inputs)`, the gradient of
            `sum(fn(inputs))` with respect to `inputs` on every backend (a
            gradient penalty; see `jk.losses.GradientPenalty`).

    Example:

    ```python
    def agreement(y_true, y_pred):
        # One value per sample: reduced (and sample-weighted) like a Keras loss.
        return keras.ops.mean(keras.ops.square(y_pred["a"] - y_pred["b"]), axis=-1)

    a = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    b = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model = jk.JointModel({"a": a, "b": b})
    model.compile(
        optimizer="adam",
        loss="mse",
        joint_losses=[jk.JointLoss(agreement, weight=0.5)],
    )
    history = model.fit(np.random.rand(64, 4), np.random.rand(64, 1), verbose=0)
    history.history["agreement_loss"]  # the term, unweighted
    ```
    """

    def __init__(self, fn, weight=1.0, name=None, updates=None, with_context=False):
        if not callable(fn):
            raise TypeError(
                f"`fn` must be callable. Received: fn={fn!r} of type "
                f"{type(fn).__name__}"
            )
        self.fn = fn
        self.weight = weight
        self.name = name or _name_of(fn)
        self.updates = _standardize_updates(updates)
        self.with_context = bool(with_context)
        self._reduction = _PerSampleReduction(name=f"{self.name}_reduction")

    def __call__(self, y_true, y_pred, sample_weight=None, context=None):
        """The term's value, reduced, and scaled per replica under
        `tf.distribute` as Keras losses are."""
        if self.with_context:
            values = self.fn(y_true, y_pred, context)
        else:
            values = self.fn(y_true, y_pred)
        values = ops.convert_to_tensor(values)
        if len(values.shape) == 0:
            return _compat.scale_loss_for_distribution(values)
        return self._reduction(values, values, sample_weight)

    def seed_generators(self):
        """The `keras.random.SeedGenerator`s this term holds as attributes.
        The joint model tracks them, so that their draws advance on every
        backend (JAX included) and are saved."""
        return [
            value
            for value in vars(self).values()
            if isinstance(value, keras.random.SeedGenerator)
        ]

    def submodel_names(self):
        """The submodel names this term refers to, by argument (checked by
        `compile()` against the submodels)."""
        return {"updates": self.updates} if self.updates else {}

    def term_config(self):
        """The config entries every joint loss has: weight, name, updates."""
        return {"weight": self.weight, "name": self.name, "updates": self.updates}

    def get_config(self):
        return {
            "fn": keras.saving.serialize_keras_object(self.fn),
            **self.term_config(),
            "with_context": self.with_context,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["fn"] = keras.saving.deserialize_keras_object(config["fn"])
        return cls(**config)

    def __repr__(self):
        updates = "" if self.updates is None else f", updates={self.updates}"
        return f"JointLoss({self.name!r}, weight={self.weight}{updates})"


class _PerSampleReduction(keras.losses.Loss):
    """Keras's own reduction (`"sum_over_batch_size"`, sample weights,
    prediction masks, scaling per replica) of precomputed per-sample values,
    given as `y_pred`."""

    def call(self, y_true, y_pred):
        return y_pred


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
