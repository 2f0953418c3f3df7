"""Splitting a step's targets and sample weights by submodel, and marking
the rows a submodel has no label for."""

import keras
from keras import ops
from keras import tree

from joint_keras import _compat
from joint_keras._compile.checks import check_keys
from joint_keras._compile.checks import format_names

_MASKED_TARGET_KEYS = {"target", "mask"}


def split(value, names, argument, extra_keys=()):
    """Splits `y` or `sample_weight` into a dict keyed by submodel name.

    A dict is keyed by submodel name (or one of `extra_keys`, the joint
    losses' names for `sample_weight`): those absent get nothing. A list or
    tuple maps to the submodels in order, one entry each. Anything else is
    shared by every submodel. `None` gives an empty dict.
    """
    if value is None:
        return {}
    if isinstance(value, dict):
        check_keys(value, list(names) + list(extra_keys), argument)
        for key, entry in value.items():
            if entry is None:
                raise ValueError(
                    f"`{argument}[{key!r}]` is None. Leave the key out of "
                    f"`{argument}` to give that submodel nothing. Received: "
                    f"{argument} with keys {sorted(value)}"
                )
        return {key: entry for key, entry in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(
                f"`{argument}` given as a list maps to the submodels in order "
                f"and needs one entry per submodel ({len(names)}: "
                f"{format_names(names)}); it has {len(value)}. Use a dict "
                f"keyed by submodel name."
            )
        return {name: entry for name, entry in zip(names, value) if entry is not None}
    return {name: value for name in names}


def is_masked_target(target):
    return isinstance(target, dict) and set(target) == _MASKED_TARGET_KEYS


def mask_unlabelled_rows(target, y_pred, missing_label):
    """Marks the rows of one submodel's batch that have no label.

    A row is unlabelled where the target is given as
    `{"target": t, "mask": m}` with `m` false, or, with
    `missing_label="nan"`, where its target has a NaN. Such rows get a
    Keras mask on the predictions, so that Keras losses average over the
    labelled rows only (and give 0 when there are none) and metrics skip
    them; NaN targets are replaced by 0 so that no NaN reaches a gradient.

    Returns:
        Tuple `(target, y_pred, labelled)`: the target and predictions to
        give the loss and metrics, and the number of labelled rows (a
        scalar tensor), or `None` when every row is labelled.
    """
    mask = None
    if is_masked_target(target):
        mask = _row_mask(target["mask"])
        target = target["target"]
    if missing_label == "nan":
        for leaf in tree.flatten(target):
            if _is_float(leaf):
                rows = _row_mask(ops.logical_not(ops.isnan(leaf)))
                mask = rows if mask is None else ops.logical_and(mask, rows)
        target = tree.map_structure(
            lambda t: (
                ops.where(ops.isnan(t), ops.zeros_like(t), t) if _is_float(t) else t
            ),
            target,
        )
    if mask is None:
        return target, y_pred, None

    def masked(prediction):
        # A copy, so that joint losses reading the same output see no mask.
        prediction = ops.copy(prediction)
        _compat.set_keras_mask(prediction, mask)
        return prediction

    labelled = ops.sum(ops.cast(mask, "float32"))
    return target, tree.map_structure(masked, y_pred), labelled


def _is_float(x):
    return keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype))


def _row_mask(mask):
    """Reduces a mask to one boolean per row (batch entry)."""
    mask = ops.cast(ops.convert_to_tensor(mask), "bool")
    if len(mask.shape) > 1:
        mask = ops.all(mask, axis=tuple(range(1, len(mask.shape))))
    return mask


def batch_size(structure):
    """The number of rows of the first tensor in `structure`, as a float
    tensor (the weight Keras gives a batch in its mean trackers)."""
    first = next(t for t in tree.flatten(structure) if t is not None)
    return ops.cast(ops.shape(first)[0], "float32")
