"""`SubmodelOptimizer`: one optimizer per submodel, with update schedules."""

import keras
from keras import ops

from joint_keras import _compile_utils


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
      variables and its optimizer's state (moments, iteration count) stay
      exactly as they were.

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
    """

    def __init__(
        self, optimizers, update_every=None, name="submodel_optimizer", **kwargs
    ):
        super().__init__(self._optimizer_for, name=name, **kwargs)
        self.submodel_optimizers = _standardize_optimizers(optimizers)
        self.update_every = _standardize_update_every(
            update_every, list(self.submodel_optimizers)
        )
        self._check_schedules_have_own_optimizer()
        # The first submodel of each optimizer: whose schedule gates it.
        self._name_by_optimizer = {}
        for name, optimizer in self.submodel_optimizers.items():
            self._name_by_optimizer.setdefault(id(optimizer), name)
        # Listed before building, so callbacks see them from the first epoch.
        for optimizer in self.submodel_optimizers.values():
            if optimizer not in self._inner_optimizers:
                optimizer.loss_scale_factor = self.loss_scale_factor
                self._inner_optimizers.append(optimizer)
        self.owner_of = None

    def set_owner_function(self, owner_of):
        """Sets `owner_of(variable) -> submodel name`, used when building."""
        self.owner_of = owner_of

    def _optimizer_for(self, variable):
        if self.owner_of is None:
            raise ValueError(
                "`SubmodelOptimizer` assigns variables to submodels through "
                "`JointModel.compile(optimizer={name: optimizer})`; it cannot "
                "be used on its own."
            )
        return self.submodel_optimizers[self.owner_of(variable)]

    def _check_schedules_have_own_optimizer(self):
        if self.update_every is None or callable(self.update_every):
            scheduled = list(self.submodel_optimizers)
        else:
            scheduled = [n for n, k in self.update_every.items() if k != 1]
        for name in scheduled:
            optimizer = self.submodel_optimizers[name]
            others = [
                other
                for other, opt in self.submodel_optimizers.items()
                if opt is optimizer and other != name
            ]
            if others and self.update_every is not None:
                raise ValueError(
                    f"Submodel {name!r} has an update schedule in "
                    f"`update_every` but shares its optimizer with {others}; "
                    "give it its own optimizer instance."
                )

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        if not self.built:
            self.build(trainable_variables)
            self.built = True
        flags = self._update_flags(ops.convert_to_tensor(self.iterations))
        grouped = {}
        for grad, variable in zip(grads, trainable_variables):
            if grad is None:
                continue
            index = self._var_to_optimizer_idx[self._var_key(variable)]
            grouped.setdefault(index, ([], []))
            grouped[index][0].append(grad)
            grouped[index][1].append(variable)
        for index, (sub_grads, sub_vars) in grouped.items():
            optimizer = self._inner_optimizers[index]
            due = flags.get(self._name_by_optimizer.get(id(optimizer)))
            if due is None:
                optimizer.apply(sub_grads, sub_vars)
            else:
                _apply_if(due, optimizer, sub_grads, sub_vars)
        self._iterations.assign_add(1)

    def _update_flags(self, step):
        """Dict name -> boolean tensor for submodels with a schedule."""
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
            _compile_utils.check_keys(
                flags, list(self.submodel_optimizers), "update_every(step)"
            )
            return {name: ops.cast(flag, "bool") for name, flag in flags.items()}
        flags = {}
        for name, rule in schedule.items():
            if callable(rule):
                flags[name] = ops.cast(rule(step), "bool")
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


def _apply_if(due, optimizer, grads, variables):
    """Applies `optimizer` only where `due`; else leaves all its state.

    Written as a select rather than a branch so that it traces the same way
    under `tf.function`, `jax.jit` and eager PyTorch.
    """
    state = list(variables) + list(optimizer.variables)
    before = [ops.copy(v.value) for v in state]
    optimizer.apply(grads, variables)
    for variable, old in zip(state, before):
        variable.assign(ops.where(due, variable.value, old))


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
        if not optimizer.name.startswith(f"{name}_"):
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
    _compile_utils.check_keys(update_every, names, "update_every")
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
