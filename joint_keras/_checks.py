"""Checks of user arguments shared by several modules, with errors that name
the argument, the submodel and what was expected."""

import math
import numbers

# A submodel or joint loss `n` logs `n_loss`; validation logs prefix `val_`.
RESERVED_PREFIX = "val"


def format_names(names):
    return "[" + ", ".join(repr(n) for n in names) + "]"


def check_keys(mapping, names, argument):
    """Raises `ValueError` if a key of the dict `mapping` is not in `names`."""
    unknown = [key for key in mapping if key not in names]
    if unknown:
        raise ValueError(
            f"`{argument}` has keys that name no submodel: "
            f"{format_names(unknown)}. Submodels are "
            f"{format_names(names)}. Received: {argument}={mapping!r}"
        )


def check_weight(weight, owner, argument, received):
    """Returns `weight` as a float; raises unless it is a non-negative finite
    number (Python or NumPy scalar)."""
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise TypeError(
            f"`{argument}` must be numbers; the weight of {owner} is "
            f"{weight!r} of type {type(weight).__name__}. "
            f"Received: {argument}={received!r}"
        )
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(
            f"`{argument}` must be non-negative and finite; the weight of "
            f"{owner} is {weight!r}. Received: {argument}={received!r}"
        )
    return float(weight)


def check_task_weights(weights, task_names):
    """Returns `weights` (a dict task name -> weight) as floats, checked as
    `compile()` checks `loss_weights`."""
    if not isinstance(weights, dict):
        raise TypeError(
            f"Task weights must be a dict task name -> weight. Received: {weights!r}"
        )
    unknown = [name for name in weights if name not in task_names]
    if unknown:
        raise ValueError(
            f"Weights given for unknown tasks {format_names(unknown)}; "
            f"the tasks are {format_names(task_names)}. Received: {weights!r}"
        )
    return {
        name: check_weight(w, f"task {name!r}", "weights", weights)
        for name, w in weights.items()
    }


def check_name(name, kind):
    """Raises unless `name` can be logged as `{name}_...` without colliding
    with validation logs."""
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"{kind} names must be non-empty strings. "
            f"Received the name {name!r} of type {type(name).__name__}"
        )
    if "/" in name:
        raise ValueError(
            f"{kind} names may not contain '/' (gradient cosines are logged "
            f"as `grad_cos/a/b`). Received: {name!r}"
        )
    if name == RESERVED_PREFIX or name.startswith(RESERVED_PREFIX + "_"):
        raise ValueError(
            f"The {kind.lower()} name {name!r} would collide with validation "
            "logs (`val_...`). Choose another name."
        )
