"""Checks of user arguments shared by several modules, with errors that name
the argument, the submodel and what was expected."""

import math
import numbers

# A submodel or joint loss `n` logs `n_loss`; validation logs prefix `val_`.
RESERVED_PREFIX = "val"

# The largest seed of `keras.random.SeedGenerator` that every backend takes
# (PyTorch keeps it as int32; JAX, which takes no negative seed, as uint32).
MAX_SEED = 2**31 - 1

_KIND_NAMES = {float: "a float", int: "an int", bool: "a bool"}


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


def check_number(
    value,
    argument,
    owner,
    *,
    kind=float,
    minimum=None,
    maximum=None,
    exclusive_minimum=False,
    exclusive_maximum=False,
    optional=False,
):
    """Returns the constructor argument `value` as a `kind`, checked as Keras
    checks its layers' arguments.

    Args:
        value: What the user passed.
        argument: The argument's name.
        owner: What the argument is given to, e.g. `"jk.weighting.FAMO"`.
        kind: `float` (any real number: Python or NumPy, not a bool),
            `int` (an integral number, not a bool) or `bool`.
        minimum, maximum: Optional bounds of a `float` or `int`, inclusive
            unless `exclusive_minimum` or `exclusive_maximum`.
        optional: Whether `None` is accepted (and returned).

    Raises:
        TypeError: `value` is not of `kind` (or `None` when `optional`).
        ValueError: `value` is NaN, infinite or out of bounds. Both messages
            name `owner` and `argument`, say what was expected and end with
            `Received: argument=value` (and the type, for a `TypeError`).
    """
    expected = _expected(
        kind, minimum, maximum, exclusive_minimum, exclusive_maximum, optional
    )
    message = f"`{owner}`: `{argument}` must be {expected}. Received: {argument}="
    if value is None and optional:
        return None
    if kind is bool:
        valid_type = isinstance(value, bool)
    else:
        number = numbers.Integral if kind is int else numbers.Real
        valid_type = isinstance(value, number) and not isinstance(value, bool)
    if not valid_type:
        raise TypeError(f"{message}{value!r} of type {type(value).__name__}")
    if kind is bool:
        return value
    in_range = isinstance(value, numbers.Integral) or math.isfinite(value)
    if in_range and minimum is not None:
        in_range = value > minimum if exclusive_minimum else value >= minimum
    if in_range and maximum is not None:
        in_range = value < maximum if exclusive_maximum else value <= maximum
    if not in_range:
        raise ValueError(f"{message}{value!r}")
    return kind(value)


def _expected(kind, minimum, maximum, exclusive_minimum, exclusive_maximum, optional):
    """What `check_number` asks for, e.g. "positive and finite (a float)"."""
    noun = ("None or " if optional else "") + _KIND_NAMES[kind]
    if kind is bool:
        return noun
    if minimum == 0 and maximum is None:
        bound = "positive" if exclusive_minimum else "non-negative"
    elif minimum is not None and maximum is not None:
        low, high = "(" if exclusive_minimum else "[", ")" if exclusive_maximum else "]"
        bound = f"in {low}{minimum}, {maximum}{high}"
    elif minimum is not None:
        bound = f"{'>' if exclusive_minimum else '>='} {minimum}"
    elif maximum is not None:
        bound = f"{'<' if exclusive_maximum else '<='} {maximum}"
    else:
        bound = None
    parts = [bound] if bound else []
    if kind is float and (minimum is None or maximum is None):
        parts.append("finite")
    return f"{' and '.join(parts)} ({noun})" if parts else noun
