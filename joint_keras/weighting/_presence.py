"""Running a strategy on the tasks present in a step, keeping its state finite.

A task whose batch has no labelled row (missing labels) is absent from that
step: a strategy must weigh or combine the others as if it were not there
(a zero gradient in MGDA's simplex, or a zero loss in FAMO's softmax, would
change every task's weight). Which tasks are absent is known only at run
time, so `over_present_tasks` runs the strategy once for each pattern of
presence of the tasks that may be absent (static shapes, no data-dependent
branch: it traces under `tf.function` and `jax.jit`) and keeps the outputs
and the state of the pattern that holds.

A non-finite loss (a NaN batch) or gradient must not poison a strategy's
state for the rest of training: the state assigned in such a step is put
back as it was.
"""

import itertools

from keras import ops


def over_present_tasks(fn, n, present, flagged, fills, state, finite):
    """Calls `fn` on the tasks present in this step.

    Args:
        fn: Callable `fn(sub) -> (per_task, whole)`: `sub` is a Python list
            of positions in `range(n)` (the tasks present), `per_task` a
            tuple of tensors `(len(sub),)` and `whole` a tuple of tensors
            with no task axis (or `None`s). It may assign `state`.
        n: Python int, the number of tasks of the step.
        present: Boolean tensor `(n,)`, or `None` when every task is.
        flagged: Python tuple of the positions that may be absent.
        fills: Tuple of tensors `(n,)`, the `per_task` values of absent
            tasks.
        state: List of the variables `fn` may assign.
        finite: Boolean scalar tensor: whether the step's inputs are
            finite; if not, `state` ends as it was before.

    Returns:
        `(per_task, whole)`: `per_task` tensors `(n,)`, `whole` as `fn`'s,
        from the pattern of presence that holds.
    """
    before = [ops.copy(v.value) for v in state]
    if present is None or not flagged:
        per_task, whole = fn(list(range(n)))
    else:
        per_task, whole = _select_pattern(fn, n, present, flagged, fills, state, before)
    for variable, old in zip(state, before):
        variable.assign(ops.where(finite, variable.value, old))
    return per_task, whole


def _select_pattern(fn, n, present, flagged, fills, state, before):
    chosen_task = chosen_whole = chosen_state = None
    # All present first: its `whole` gives the shapes of the empty pattern's.
    for pattern in itertools.product([True, False], repeat=len(flagged)):
        absent = {f for f, on in zip(flagged, pattern) if not on}
        sub = [i for i in range(n) if i not in absent]
        holds = _holds(present, flagged, pattern)
        for variable, old in zip(state, before):
            variable.assign(old)
        if sub:
            per_task, whole = fn(sub)
            per_task = tuple(_scatter(t, sub, n, f) for t, f in zip(per_task, fills))
            values = [ops.copy(v.value) for v in state]
        else:
            per_task, values = fills, before
            whole = tuple(
                None if w is None else ops.zeros_like(w) for w in chosen_whole
            )
        if chosen_task is None:
            chosen_task, chosen_whole, chosen_state = per_task, whole, values
            continue
        chosen_task = _where(holds, per_task, chosen_task)
        chosen_whole = _where(holds, whole, chosen_whole)
        chosen_state = _where(holds, values, chosen_state)
    for variable, value in zip(state, chosen_state):
        variable.assign(value)
    return chosen_task, chosen_whole


def _holds(present, flagged, pattern):
    conditions = [
        present[f] if on else ops.logical_not(present[f])
        for f, on in zip(flagged, pattern)
    ]
    holds = conditions[0]
    for condition in conditions[1:]:
        holds = ops.logical_and(holds, condition)
    return holds


def _where(flag, new, old):
    return type(old)(
        None if o is None else ops.where(flag, ops.cast(x, o.dtype), o)
        for x, o in zip(new, old)
    )


def _scatter(values, sub, n, fill):
    """`values` of the tasks `sub` placed in a vector `(n,)` holding `fill`
    elsewhere (a product with a one-hot matrix: differentiable everywhere,
    and no sparse gradient on TensorFlow)."""
    fill = ops.convert_to_tensor(fill)
    if len(sub) == n:
        return ops.cast(values, fill.dtype)
    selection = ops.one_hot(ops.array(sub), n, dtype=fill.dtype)
    kept = 1.0 - ops.sum(selection, axis=0)
    return ops.matmul(ops.cast(values, fill.dtype), selection) + fill * kept
