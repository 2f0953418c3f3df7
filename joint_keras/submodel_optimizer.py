"""`SubmodelOptimizer`: one optimizer per submodel, with update schedules."""

import keras
from keras import ops

from joint_keras._compile.checks import check_keys


@keras.saving.register_keras_serializable(package="joint_keras")
class SubmodelOptimizer(keras.optimizers.MultiOptimizer):
    """Updates each submodel's variables with its own optimizer.

    `JointModel.compile()` builds it when `optimizer` is a dict
    `{name: optimizer}` or `update_every` is given; you rarely create it
    yourself. It is a Keras `MultiOptimizer`, so `ReduceLROnPlateau` and
    `LearningRateScheduler` act on every inner optimizer (logging
    `learning_rate_{optimizer name}`), and `.optimizers` lists them.

    Rules:

    - A variable shared by several submodels is updated once per step, by
      the optimizer of the first of them in submodel order, with the
      gradient of the whole objective.
    - On a step where a submodel is not due (`update_every`), its
      variables and their optimizer state (moments) stay exactly as they
      were; an inner optimizer's iteration count advances on the steps when
      it moves a variable. Several submodels may share one optimizer
      instance, with Keras's semantics: one iteration count, one set of
      moments per variable.
    - `iterations` counts training steps: what `update_every` reads.

    Args:
        optimizers: Dict mapping each submodel name to a Keras optimizer
            (instance, name or config). Each inner optimizer is renamed
            `{submodel}_{name}` so that their logs do not collide.
        update_every: Optional dict mapping submodel names to a positive
            int `k` (updated on steps 0, k, 2k, ...) or to a callable
            `fn(step) -> bool`; or one callable `fn(step) -> dict` of such
            booleans. `step` is the scalar integer count of training steps
            taken so far; write callables with `keras.ops`. Submodels not
            named are updated on every step.
        name: String. Defaults to `"submodel_optimizer"`.
        **kwargs: Passed to `keras.optimizers.MultiOptimizer`.

    Example:

    ```python
    gen = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    disc = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model = jk.JointModel({"gen": gen, "disc": disc}, inputs={"disc": "gen"})
    model.compile(
        # Builds a jk.SubmodelOptimizer; the discriminator moves every other step.
        optimizer={"gen": keras.optimizers.Adam(2e-4), "disc": "sgd"},
        loss={"disc": "mse"},
        update_every={"disc": 2},
    )
    model.fit(np.random.rand(64, 4), {"disc": np.random.rand(64, 1)}, verbose=0)
    [o.iterations for o in model.optimizer.optimizers]  # 2 steps and 1
    ```
    """

    def __init__(
        self, optimizers, update_every=None, name="submodel_optimizer", **kwargs
    ):
        optimizers = _standardize_optimizers(optimizers)
        owners = _OwnerMap(optimizers)
        super().__init__(owners, name=name, **kwargs)
        self.submodel_optimizers = optimizers
        self.owners = owners
        self.update_every = _standardize_update_every(update_every, list(optimizers))
        self.built_variables = None

    def assign_owners(self, owner_of):
        """Sets `owner_of(variable) -> submodel name` (called by
        `JointModel.compile()`), which decides each variable's optimizer."""
        self.owners.owner_of = owner_of

    def build(self, var_list):
        if self.built:
            return
        self.built_variables = list(var_list)
        super().build(var_list)

    def apply(self, grads, trainable_variables=None):
        """Applies each gradient with its variable's optimizer. Update
        schedules are applied by the joint model's step, which knows which
        variables a step moves (`joint_keras/_step/gates.py`)."""
        if trainable_variables is None:
            trainable_variables = self.built_variables
        trainable_variables = list(trainable_variables)
        if not self.built:
            self.build(trainable_variables)
        grouped = {}
        for grad, variable in zip(grads, trainable_variables):
            if grad is not None:
                optimizer = self.owners(variable)
                grouped.setdefault(id(optimizer), (optimizer, [], []))
                grouped[id(optimizer)][1].append(grad)
                grouped[id(optimizer)][2].append(variable)
        if not grouped:
            return
        for optimizer, sub_grads, sub_vars in grouped.values():
            optimizer.apply(sub_grads, sub_vars)
        self.iterations.assign_add(1)

    def step_counters(self, variables):
        """`[(iterations, positions)]`: each inner optimizer's step count and
        the positions (in `variables`) of the variables it updates."""
        counters = {}
        for position, variable in enumerate(variables):
            optimizer = self.owners(variable)
            counters.setdefault(id(optimizer), (optimizer.iterations, []))
            counters[id(optimizer)][1].append(position)
        return list(counters.values())

    def update_flags(self, step):
        """Dict name -> boolean tensor for the submodels with a schedule."""
        schedule = self.update_every
        if schedule is None:
            return {}
        if callable(schedule):
            flags = schedule(step)
            if not isinstance(flags, dict):
                raise TypeError(
                    "A callable `update_every` must return a dict mapping "
                    "submodel names to booleans. Received: "
                    f"{flags!r} of type {type(flags).__name__}"
                )
            check_keys(flags, list(self.submodel_optimizers), "update_every(step)")
            return {name: _as_flag(flag, name) for name, flag in flags.items()}
        flags = {}
        for name, rule in schedule.items():
            if callable(rule):
                flags[name] = _as_flag(rule(step), name)
            elif rule != 1:
                flags[name] = ops.equal(ops.mod(step, rule), 0)
        return flags

    def get_config(self):
        return {
            "optimizers": {
                name: keras.saving.serialize_keras_object(opt)
                for name, opt in self.submodel_optimizers.items()
            },
            "update_every": keras.saving.serialize_keras_object(self.update_every),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["optimizers"] = {
            name: keras.saving.deserialize_keras_object(
                opt, custom_objects=custom_objects
            )
            for name, opt in config["optimizers"].items()
        }
        config["update_every"] = keras.saving.deserialize_keras_object(
            config["update_every"], custom_objects=custom_objects
        )
        return cls(**config)


class _OwnerMap:
    """The optimizer of each variable: its owner submodel's (as decided by
    `owner_of`); variables of no submodel go to the first optimizer."""

    def __init__(self, optimizers):
        self.optimizers = optimizers
        self.owner_of = None

    def values(self):
        unique = []
        for optimizer in self.optimizers.values():
            if all(optimizer is not o for o in unique):
                unique.append(optimizer)
        return unique

    def __call__(self, variable):
        if self.owner_of is None:
            raise ValueError(
                "`SubmodelOptimizer` assigns variables to submodels through "
                "`JointModel.compile(optimizer={name: optimizer})`; it cannot "
                "be used on its own."
            )
        owner = self.owner_of(variable)
        if owner is None:
            return next(iter(self.optimizers.values()))
        return self.optimizers[owner]


def _as_flag(flag, name):
    try:
        flag = ops.convert_to_tensor(flag)
        dtype = keras.backend.standardize_dtype(flag.dtype)
    except (TypeError, ValueError):  # A string, say, on JAX and PyTorch.
        dtype = type(flag).__name__
    if dtype != "bool":
        raise TypeError(
            f"`update_every` must give a boolean for submodel {name!r} (write "
            "the schedule with `keras.ops`, e.g. `ops.equal(ops.mod(step, 2), "
            f"0)`). Received: {flag!r} of dtype {dtype}."
        )
    return flag


def _standardize_optimizers(optimizers):
    if not isinstance(optimizers, dict) or not optimizers:
        raise TypeError(
            "`optimizer` must map submodel names to optimizers. "
            f"Received: optimizer={optimizers!r}"
        )
    result = {}
    for name, optimizer in optimizers.items():
        try:
            optimizer = keras.optimizers.get(optimizer)
        except ValueError as error:
            raise ValueError(
                f"`optimizer[{name!r}]` is not a Keras optimizer: {error}"
            ) from error
        if isinstance(
            optimizer,
            (keras.optimizers.MultiOptimizer, keras.optimizers.LossScaleOptimizer),
        ):
            raise TypeError(
                f"`optimizer[{name!r}]` must be a plain Keras optimizer, not "
                f"a {type(optimizer).__name__}. Received: {optimizer!r}"
            )
        first = all(optimizer is not other for other in result.values())
        if first and not optimizer.name.startswith(f"{name}_"):
            optimizer.name = f"{name}_{optimizer.name}"
        result[name] = optimizer
    return result


def _standardize_update_every(update_every, names):
    if update_every is None or callable(update_every):
        return update_every
    if not isinstance(update_every, dict):
        raise TypeError(
            "`update_every` must be a dict mapping submodel names to a "
            "positive int or a callable `fn(step) -> bool`, or a callable "
            f"`fn(step) -> dict`. Received: update_every={update_every!r}"
        )
    check_keys(update_every, names, "update_every")
    for name, rule in update_every.items():
        if callable(rule):
            continue
        if isinstance(rule, bool) or not isinstance(rule, int) or rule < 1:
            raise ValueError(
                f"`update_every[{name!r}]` must be a positive int (update "
                "every k-th step) or a callable `fn(step) -> bool`. "
                f"Received: update_every={update_every!r}"
            )
    return dict(update_every)


def build_optimizer(optimizer, spec, model):
    """The optimizer `JointModel.compile()` gives Keras: `optimizer` itself,
    or a `SubmodelOptimizer` when it is a dict or `update_every` is given
    (then the one optimizer instance for every submodel: the instance the
    user holds is the one that trains)."""
    names = list(model.submodels)
    if not isinstance(optimizer, dict) and spec.update_every is None:
        return optimizer
    index = model._variable_index()
    if isinstance(optimizer, dict):
        check_keys(optimizer, names, "optimizer")
        uncovered = index.uncovered(list(optimizer))
        if uncovered:
            raise ValueError(
                "When `optimizer` is a dict, every trainable variable needs "
                "a submodel with an optimizer; the submodels "
                f"{uncovered} have variables no optimizer updates. Add "
                f"entries for them. Received: optimizer={optimizer!r}"
            )
    else:
        shared = keras.optimizers.get(optimizer)
        optimizer = {name: shared for name in names}
    owners = [name for name in names if name in optimizer]
    result = SubmodelOptimizer(optimizer, update_every=spec.update_every)
    result.assign_owners(lambda v: model._variable_index().first_owner(v, owners))
    return result


def schedule_flags(optimizer):
    """`(flags, owner_of)` for an optimizer with update schedules (a
    `SubmodelOptimizer`, maybe inside a `LossScaleOptimizer`): the due flag
    of each scheduled submodel at this step, and `owner_of(variable)`, the
    submodel whose schedule a variable follows. `None` without schedules."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not isinstance(inner, SubmodelOptimizer) or inner.update_every is None:
        return None
    step = ops.convert_to_tensor(inner.iterations)
    return inner.update_flags(step), inner.owners.owner_of


def step_counters(optimizer, variables):
    """The step counts of the optimizers inside `optimizer` that count their
    own (a `SubmodelOptimizer`'s), each with the positions (in `variables`)
    of the variables it updates; `[]` for any other optimizer, whose count
    advances at every `apply`."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not isinstance(inner, SubmodelOptimizer):
        return []
    return inner.step_counters(variables)


def check_accumulation(spec, optimizer, received):
    """Gradient-level strategies combine each batch's per-task gradients:
    with gradient accumulation they would combine each micro-batch's."""
    if spec.kind == "gradient" and _accumulates_gradients(optimizer):
        raise ValueError(
            f"`weighting={spec.weighting.name!r}` combines the tasks' "
            "gradients of each batch, so with `gradient_accumulation_steps` "
            "it would combine each micro-batch's and not match the large "
            "batch. Use a larger batch, or a loss-level strategy. "
            f"Received: optimizer={received!r}"
        )


def _accumulates_gradients(optimizer):
    """Whether `optimizer` (or one it wraps) accumulates gradients."""
    inner = list(getattr(optimizer, "optimizers", []))
    if hasattr(optimizer, "inner_optimizer"):
        inner.append(optimizer.inner_optimizer)
    return bool(optimizer.gradient_accumulation_steps) or any(
        _accumulates_gradients(o) for o in inner if o is not optimizer
    )
