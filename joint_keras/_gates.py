"""Updates that happen only where a flag holds, leaving all state alone
otherwise (a submodel not due under `update_every`, or with no labelled row
in the batch).

Written as a select, not a branch, so that it traces the same way under
`tf.function`, `jax.jit` and eager PyTorch.
"""

import collections

from keras import ops

from joint_keras import backend


def keep_unless(flag, state, update):
    """Runs `update()`; then each variable in `state` keeps its old value
    unless `flag` (a boolean scalar tensor) is true."""
    before = [ops.copy(v.value) for v in state]
    update()
    for variable, old in zip(state, before):
        variable.assign(ops.where(flag, variable.value, old))


def apply_gated(optimizer, grads, variables, gates):
    """Applies `grads` (aligned with `variables`, `None` for none); the
    variable at each position `i` of `gates`, and its optimizer state, move
    only where `gates[i]` is true."""
    if not optimizer.built:
        # On all the variables, even when this update has gradients for some
        # (a routed or alternating step).
        optimizer.build(variables)
    if not gates:
        backend.apply(optimizer, grads, variables)
        return
    slots = slot_variables(optimizer, variables)
    flags = {}
    for i, flag in gates.items():
        flags.setdefault(id(flag), (flag, []))[1].extend([variables[i]] + slots[i])
    state = [v for _, vs in flags.values() for v in vs]
    before = [ops.copy(v.value) for v in state]
    backend.apply(optimizer, grads, variables)
    olds = iter(before)
    for flag, vs in flags.values():
        for variable in vs:
            variable.assign(ops.where(flag, variable.value, next(olds)))


def slot_variables(optimizer, variables):
    """For each of `variables`, the optimizer variables that hold its state.

    Keras optimizers create a variable's state with
    `add_variable_from_reference`, which (as documented there) names it
    `{variable.path with "/" as "_"}_{slot}`, in the order of the variables
    the optimizer was built with; variables with the same path share their
    slots' names and are told apart by that order.

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
