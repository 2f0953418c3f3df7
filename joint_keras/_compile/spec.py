"""`JointModel.compile()`'s arguments, checked and standardized.

`compile_spec()` is a pure function of the arguments and the submodel names:
it builds nothing and needs no model, so every rule here can be tested on
its own.
"""

from typing import NamedTuple

from joint_keras import weighting as weighting_module
from joint_keras._compile.checks import check_keys
from joint_keras._compile.checks import check_name
from joint_keras._compile.checks import check_weight
from joint_keras._compile.checks import format_names
from joint_keras.joint_loss import JointLoss

MISSING_LABEL_MODES = (None, "nan")


class CompileSpec(NamedTuple):
    """What `compile()` was asked for, per submodel and per task.

    A task is one term of the objective with its own weight and log: a
    submodel's supervised loss, or a joint loss.
    """

    names: tuple
    losses: dict  # name -> Keras loss identifier (maybe nested), or None
    output_loss_weights: dict  # name -> per-output weights, or None
    metrics: dict  # name -> metrics for that submodel, or None
    weighted_metrics: dict
    joint_losses: tuple
    task_names: tuple  # submodels with a loss (in order), then joint losses
    base_weights: tuple  # compiled weight of each task
    missing_label: object
    weighting: object  # a built-later `jk.weighting.Weighting`
    update_every: object
    # "plain" (one gradient per routing group, from one forward pass),
    # "alternating" (the groups updated in turn) or "gradient"
    # (gradient-level weighting).
    kind: str
    # Routing group (a tuple of submodel names; `()` for the terms without
    # `updates`) -> its tasks; and, when alternating, the groups in order.
    group_tasks: dict
    stages: tuple


def compile_spec(
    names,
    output_counts=None,
    loss=None,
    loss_weights=None,
    metrics=None,
    weighted_metrics=None,
    joint_losses=None,
    update_every=None,
    missing_label=None,
    weighting=None,
    alternate=None,
    **keras_arguments,
):
    """Checks `compile()`'s arguments and returns a `CompileSpec`.

    Args:
        names: The submodel names, in order.
        output_counts: Optional dict name -> number of outputs of that
            submodel, where known (per-output weights need several).
        **keras_arguments: `compile()`'s arguments that Keras handles
            (`optimizer`, `run_eagerly`, ...), ignored here.

    Raises:
        ValueError, TypeError: naming the argument, the submodel and what
            was expected.
    """
    names = tuple(names)
    losses = per_submodel(loss, names, "loss", is_entry=_is_loss_entry)
    task_weights, output_weights = _loss_weights(
        loss_weights, losses, names, output_counts or {}
    )
    joint_terms = _joint_losses(joint_losses, names)
    if missing_label not in MISSING_LABEL_MODES:
        raise ValueError(
            "`missing_label` must be None or 'nan' (rows whose target has a "
            f"NaN are unlabelled). Received: missing_label={missing_label!r}"
        )
    strategy = weighting_module.get(weighting)
    routed = any(term.updates is not None for term in joint_terms)
    if strategy.gradient_level and routed:
        raise ValueError(
            f"`weighting={strategy.name!r}` combines per-task gradients, "
            "which does not go with joint losses that set `updates`."
        )
    tasks = tuple(n for n in names if losses[n] is not None)
    task_names = tasks + tuple(term.name for term in joint_terms)
    group_tasks = {(): list(tasks)} if tasks else {}
    for term in joint_terms:
        key = group_key(term.updates, names)
        group_tasks.setdefault(key, []).append(term.name)
    kind = "plain"
    if strategy.gradient_level and task_names:
        kind = "gradient"
    stages = ()
    if alternate is not None and alternate is not False:
        stages = _stages(alternate, group_tasks, names)
        if update_every is not None:
            raise ValueError(
                "`alternate` gives the order and number of each group's "
                "updates in a step; it does not go with `update_every`. "
                f"Received: update_every={update_every!r}"
            )
        kind = "alternating"
        alone = [list(k) for k in dict.fromkeys(stages) if len(group_tasks[k]) < 2]
        if strategy.weighs_tasks_together and alone:
            raise ValueError(
                f"`weighting={strategy.name!r}` weighs the tasks that one update "
                "trains against each other; with `alternate`, the stages "
                f"{alone} each train one task, which it would weigh alone "
                "(weight 1): nothing to balance. Use it without `alternate`, "
                "or a strategy that weighs each task on its own "
                "('uncertainty', 'dwa', or fixed weights)."
            )
    return CompileSpec(
        names=names,
        losses=losses,
        output_loss_weights=output_weights,
        metrics=per_submodel(metrics, names, "metrics", is_entry=_is_metrics_entry),
        weighted_metrics=per_submodel(
            weighted_metrics, names, "weighted_metrics", is_entry=_is_metrics_entry
        ),
        joint_losses=tuple(joint_terms),
        task_names=task_names,
        base_weights=tuple(task_weights[n] for n in tasks)
        + tuple(float(term.weight) for term in joint_terms),
        missing_label=missing_label,
        weighting=strategy,
        update_every=update_every,
        kind=kind,
        group_tasks=group_tasks,
        stages=stages,
    )


def group_key(updates, names):
    """The routing group of a term updating `updates` (None: everything)."""
    if updates is None:
        return ()
    return tuple(n for n in names if n in updates)


def _stages(alternate, group_tasks, names):
    """The groups to update in turn, from `alternate`: `True` (each group
    once, in the order of the joint losses), or a list of entries, each a
    submodel name (the group whose `updates` list it), a list of names (the
    group updating exactly those), or `None` (the terms without `updates`)."""
    groups = list(group_tasks)
    if not any(groups):
        raise ValueError(
            "`alternate` updates the groups of joint losses declared with "
            "`updates=[...]` in turn; there are none."
        )
    if alternate is True:
        return tuple(groups)
    if not isinstance(alternate, (list, tuple)) or not alternate:
        raise TypeError(
            "`alternate` must be True or a non-empty list of groups (a "
            f"submodel name each). Received: alternate={alternate!r}"
        )
    stages = []
    for entry in alternate:
        if entry is None:
            key = ()
        elif isinstance(entry, str):
            matches = [g for g in groups if entry in g]
            if len(matches) != 1:
                raise ValueError(
                    f"`alternate` entry {entry!r} must name a submodel that "
                    "the `updates` of exactly one group of joint losses list; "
                    f"the groups are {[list(g) for g in groups]}."
                )
            key = matches[0]
        else:
            key = group_key(entry, names)
        if key not in group_tasks:
            raise ValueError(
                f"`alternate` entry {entry!r} is no group of this model's "
                f"losses; the groups are {[list(g) for g in groups]} (`None` "
                "for the terms without `updates`)."
            )
        stages.append(key)
    missing = [list(g) for g in groups if g not in stages]
    if missing:
        raise ValueError(
            f"`alternate` never updates the groups {missing}. Received: "
            f"alternate={alternate!r}"
        )
    return tuple(stages)


def per_submodel(value, names, argument, is_entry):
    """Spreads a compile argument over the submodels.

    A dict is keyed by submodel name (missing names get `None`). A list or
    tuple whose items are each one submodel's entry (`is_entry`) maps to the
    submodels in order and must have one item per submodel. Anything else
    applies to every submodel.
    """
    if isinstance(value, dict):
        check_keys(value, names, argument)
        return {name: value.get(name) for name in names}
    if isinstance(value, (list, tuple)) and value and all(map(is_entry, value)):
        if len(value) != len(names):
            raise ValueError(
                f"`{argument}` given as a list maps to the submodels in "
                f"order and needs one entry per submodel ({len(names)}: "
                f"{format_names(names)}); it has {len(value)}. Use a dict "
                f"keyed by submodel name. Received: {argument}={value!r}"
            )
        return dict(zip(names, value))
    return {name: value for name in names}


def _is_loss_entry(item):
    # In `loss=[...]`, every item is one submodel's loss.
    return True


def _is_metrics_entry(item):
    # `metrics=["mae", "mse"]` is one list for every submodel (the Keras
    # habit); `metrics=[["mae"], ["mse"]]` (or dicts, or None) is one entry
    # per submodel.
    return item is None or isinstance(item, (list, tuple, dict))


def _loss_weights(loss_weights, losses, names, output_counts):
    """Returns `(task weight per submodel, per-output weights per submodel)`.

    `loss_weights` is `None`, a number for every submodel, a list in
    submodel order, or a dict keyed by submodel name. An entry may be a
    dict or list of per-output weights for a multi-output submodel (its
    task weight is then 1.0).
    """
    if loss_weights is None:
        given = {}
    elif isinstance(loss_weights, dict):
        check_keys(loss_weights, names, "loss_weights")
        given = dict(loss_weights)
    elif isinstance(loss_weights, (list, tuple)):
        if len(loss_weights) != len(names):
            raise ValueError(
                "`loss_weights` given as a list must have one entry per "
                f"submodel ({len(names)}: {format_names(names)}). "
                f"Received: loss_weights={loss_weights!r}"
            )
        given = dict(zip(names, loss_weights))
    else:
        given = {name: loss_weights for name in names}
        given = {name: w for name, w in given.items() if losses[name] is not None}
    task_weights, output_weights = {}, {}
    for name in names:
        weight = given.get(name, 1.0)
        if name in given and losses[name] is None:
            raise ValueError(
                f"`loss_weights` gives a weight to submodel {name!r}, but "
                f"`loss` gives it no loss. Received: loss_weights="
                f"{loss_weights!r}"
            )
        output_weights[name] = None
        if isinstance(weight, (dict, list, tuple)) and output_counts.get(name) != 1:
            for leaf in _leaves(weight):
                check_weight(leaf, f"submodel {name!r}", "loss_weights", loss_weights)
            output_weights[name], weight = weight, 1.0
        task_weights[name] = check_weight(
            weight, f"submodel {name!r}", "loss_weights", loss_weights
        )
    return task_weights, output_weights


def _leaves(structure):
    if isinstance(structure, dict):
        return [leaf for v in structure.values() for leaf in _leaves(v)]
    if isinstance(structure, (list, tuple)):
        return [leaf for v in structure for leaf in _leaves(v)]
    return [structure]


def _joint_losses(joint_losses, names):
    """Returns a list of validated `JointLoss`, wrapping bare callables."""
    if joint_losses is None:
        return []
    if not isinstance(joint_losses, (list, tuple)):
        joint_losses = [joint_losses]
    result, seen = [], set()
    for i, term in enumerate(joint_losses):
        if not isinstance(term, JointLoss):
            if not callable(term):
                raise TypeError(
                    f"`joint_losses[{i}]` must be a `jk.JointLoss` or a "
                    "callable `fn(y_true, y_pred)`. Received: "
                    f"{term!r} of type {type(term).__name__}"
                )
            term = JointLoss(term)
        check_weight(
            term.weight, f"joint loss {term.name!r}", "joint_losses", joint_losses
        )
        check_name(term.name, "Joint loss")
        if term.name in names or term.name in seen:
            raise ValueError(
                f"Joint loss names must be unique and differ from submodel "
                f"names (each logs `{{name}}_loss`); {term.name!r} is taken "
                f"already. Submodels are {format_names(names)}. Pass "
                "`name=` to `jk.JointLoss`."
            )
        for argument, used in term.submodel_names().items():
            unknown = [u for u in used if u not in names]
            if unknown:
                raise ValueError(
                    f"`{argument}` of joint loss {term.name!r} names no "
                    f"submodel: {format_names(unknown)}. Submodels are "
                    f"{format_names(names)}. Received: {argument}={used!r}"
                )
        seen.add(term.name)
        result.append(term)
    return result
