"""Gradient routing: which loss group updates which variables.

`JointModel` splits its loss into groups: `None` for the terms that update
every variable they reach, and a tuple of submodel names for joint losses
declared with `updates=[...]`. The backend steps take one gradient per
group over that group's variables; `combine` adds them up per variable.
"""


def group_indices(model, keys):
    """For each group key, the indices into `model.trainable_variables` of
    the variables it updates.

    Group `None` reaches every variable except those of submodels that no
    loss reaches in this step (`model._trace.unreached`), which get no
    gradient rather than a zero one.
    """
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    unreached = model._trace.unreached
    indices = []
    for key in keys:
        if key is None:
            indices.append([i for v, i in position.items() if v not in unreached])
            continue
        selected = {
            position[id(v)]
            for name in key
            for v in model.submodels[name].trainable_variables
            if id(v) in position
        }
        indices.append(sorted(selected))
    return indices


def unreached_variables(model, y):
    """Ids of the variables that no loss can reach in a step with targets
    `y`: those used only by submodels with no target in a dict `y`, no
    regularization loss, and no joint loss or `compute_joint_loss` that
    could read their outputs."""
    compile_loss = model._compile_loss
    if (
        not isinstance(y, dict)
        or compile_loss is None
        or compile_loss.joint_losses
        or not getattr(type(model).compute_joint_loss, "is_default", False)
    ):
        return frozenset()
    reached = {
        name
        for name, submodel in model.submodels.items()
        if name in y or submodel.losses
    }
    reached_ids = {
        id(v) for name in reached for v in model.submodels[name].trainable_variables
    }
    return frozenset(
        id(v)
        for name, submodel in model.submodels.items()
        if name not in reached
        for v in submodel.trainable_variables
        if id(v) not in reached_ids
    )


def combine(per_group, indices, num_variables):
    """Sums per-group gradients into one gradient per variable.

    Args:
        per_group: For each group, the list of gradients of its variables
            (entries may be `None` where the group does not reach one).
        indices: For each group, the variable indices of its gradients.
        num_variables: Length of the returned list.

    Returns:
        List of gradients, `None` for a variable no group reaches.
    """
    grads = [None] * num_variables
    for group_grads, group_indices_ in zip(per_group, indices):
        for i, grad in zip(group_indices_, group_grads):
            if grad is None:
                continue
            grads[i] = grad if grads[i] is None else grads[i] + grad
    return grads


def with_gradients(grads, variables):
    """The `(grads, variables)` pairs that have a gradient, as two lists.

    Variables a routed loss does not update get no gradient; leaving them
    out of `optimizer.apply` keeps Keras from warning about them.
    """
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    return [g for g, _ in pairs], [v for _, v in pairs]
