"""Applying an update that moves some variables only where a flag holds,
leaving all their state alone otherwise (`joint_keras/_step/updates.py` says
which).

Written as a select, not a branch, so that it traces the same way under
`tf.function`, `jax.jit` and eager PyTorch.
"""

import collections

from keras import ops

from joint_keras import backend
from joint_keras.submodel_optimizer import step_counters


def apply_gated(optimizer, grads, variables, gates):
    """Applies `grads` (aligned with `variables`, `None` for none).

    The variable at each position `i` of `gates`, and its optimizer state,
    move only where `gates[i]` holds: a boolean scalar, or a boolean tensor
    of the variable's shape (entry by entry). An inner optimizer of a
    `SubmodelOptimizer` counts a step only when one of its variables moves.
    """
    if not optimizer.built:
        # On all the variables, even when this update has gradients for some
        # (a routed or alternating step).
        optimizer.build(variables)
    if not gates:
        backend.apply(optimizer, grads, variables)
        return
    slots = slot_variables(optimizer, variables)
    kept = []  # (variable, flag) pairs, each flag for the variable's shape.
    for i, flag in gates.items():
        kept += [(v, _for_shape(flag, v)) for v in [variables[i]] + slots[i]]
    for counter, positions in step_counters(optimizer, variables):
        moved = [i for i in positions if grads[i] is not None]
        if moved and all(i in gates for i in moved):
            flags = [ops.any(gates[i]) for i in moved]
            kept.append((counter, any_of(flags)))
    before = [ops.copy(v.value) for v, _ in kept]
    backend.apply(optimizer, grads, variables)
    for (variable, flag), old in zip(kept, before):
        variable.assign(ops.where(flag, variable.value, old))


def _for_shape(flag, variable):
    """`flag` for `variable`: entry by entry where their shapes match (a
    strategy's per-task variable and its moments), else whether any entry
    holds (a factored optimizer state)."""
    if len(flag.shape) == 0 or tuple(flag.shape) == tuple(variable.shape):
        return flag
    return ops.any(flag)


def any_of(flags):
    """The logical or of a list of boolean tensors."""
    result = flags[0]
    for flag in flags[1:]:
        result = ops.logical_or(result, flag)
    return result


def slot_variables(optimizer, variables):
    """For each of `variables`, the optimizer variables that hold its state.

    Keras optimizers create a variable's state with
    `add_variable_from_reference`, whose code names it `{variable.path with
    "/" as "_"}_{slot}` (its docstring says `{slot}_{variable.name}`, which
    it is not), in the order of the variables the optimizer was built with;
    variables with the same path share their slots' names and are told apart
    by that order.

    Returns:
        A list, aligned with `variables`, of lists of optimizer variables.
    """
    keys = [v.path.replace("/", "_") for v in variables]
    longest_first = sorted(set(keys), key=len, reverse=True)
    by_key = collections.defaultdict(list)
    for slot in optimizer.variables:
        key = next((k for k in longest_first if slot.name.startswith(k + "_")), None)
        if key is not None:
            by_key[key].append(slot)
    count = collections.Counter(keys)
    seen = collections.Counter()
    result = []
    for key in keys:
        group = by_key[key]
        size = len(group) // count[key]
        result.append(group[seen[key] * size : (seen[key] + 1) * size])
        seen[key] += 1
    return result
