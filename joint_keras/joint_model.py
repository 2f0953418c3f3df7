"""`JointModel`: several Keras models trained together as one Keras model."""

import types

import keras

from joint_keras import _compile_utils
from joint_keras import _routing
from joint_keras import _serialization
from joint_keras import backend as _backend
from joint_keras import weighting as weighting_module
from joint_keras.submodel_optimizer import SubmodelOptimizer

# A submodel name `n` logs `n_loss`; validation logs prefix `val_`, so these
# names would collide with validation logs of the total or of another model.
_RESERVED_PREFIX = "val"


@keras.saving.register_keras_serializable(package="joint_keras")
class JointModel(keras.Model):
    """Trains several Keras models jointly on a weighted shared objective.

    `JointModel` wraps a dict of submodels into one `keras.Model`, so joint
    training keeps `compile()`, `fit()`, `evaluate()`, `predict()`,
    callbacks, and the Keras training loop of every backend. The submodels
    are the same objects you pass in; they are trained in place.

    On each step, every submodel gets the input (or its own entry of a dict
    input keyed by submodel name), and the optimizer minimizes

    `loss = sum(loss_weights[name] * loss[name](y[name], y_pred[name]))`
    `       + regularization losses of all submodels`

    with one gradient of the total over the deduplicated trainable variables:
    a layer or variable shared by several submodels is updated exactly once
    per step, with the gradient of the whole objective.

    Logs (History, progress bar, callbacks) carry:

    - `loss`: the weighted total, regularization included.
    - `{name}_loss`: the unweighted loss of submodel `name`.
    - `{name}_{metric}`: each metric compiled for submodel `name`.

    and their `val_` twins on validation data.

    Args:
        submodels: Dict mapping a name to a `keras.Model`, or a list of
            models named by their `.name`. Names are strings; a name may
            not be `"val"` or start with `"val_"` (it would collide with
            validation logs).
        **kwargs: Passed to `keras.Model` (for example `name`).

    Example:

    ```python
    model = jk.JointModel({"model1": m1, "model2": m2})
    model.compile(
        optimizer="adam",
        loss={"model1": "mse", "model2": "mae"},
        loss_weights={"model1": 0.7, "model2": 0.3},
        metrics={"model1": ["mae"], "model2": ["mse"]},
    )
    model.fit(x, y, epochs=3, validation_split=0.2)
    predictions = model.predict(x)  # {"model1": array, "model2": array}
    ```
    """

    def __init__(self, submodels, **kwargs):
        super().__init__(**kwargs)
        self._submodels = _standardize_submodels(submodels)
        self._step_kind = "keras"
        self._weighting = None
        # Per-trace scratch (the loss groups of the step being traced), per
        # thread, in an object that Keras does not track.
        self._trace = _compile_utils.StepValues()
        # A JointModel has no variables of its own: it is built when its
        # submodels are, so a fresh one can save, load weights, or be
        # resumed by `BackupAndRestore` at once.
        if all(model.built for model in self._submodels.values()):
            self.built = True

    @property
    def submodels(self):
        """Read-only dict of the wrapped models, keyed by name."""
        return types.MappingProxyType(dict(self._submodels))

    def call(self, inputs, training=None):
        inputs = self._route_inputs(inputs)
        outputs = {}
        for name, model in self._submodels.items():
            try:
                # A frozen submodel (a distillation teacher) runs in
                # inference mode, as in `keras.distillation.Distiller`.
                outputs[name] = model(
                    inputs[name], training=training if model.trainable else False
                )
            except ValueError as error:
                raise ValueError(
                    f"Submodel {name!r} could not be called on its input."
                    f"{self._shared_layers_hint(name)}\n{error}"
                ) from error
        return outputs

    def _shared_layers_hint(self, name):
        shared = {
            layer.name: owners
            for layer, owners in _serialization.shared_layers(self._submodels).items()
            if name in owners
        }
        if not shared:
            return ""
        return (
            " It shares layers with other submodels "
            f"(layer: submodels) {shared}; a shared layer must receive "
            "inputs of the same shape from every submodel that uses it."
        )

    def export(
        self,
        filepath,
        format="tf_saved_model",
        verbose=None,
        input_signature=None,
        **kwargs,
    ):
        """Exports the joint model for inference, as `keras.Model.export`.

        Without `input_signature`, it is read from the submodels' inputs:
        one input when every submodel takes the same, else a dict keyed by
        submodel name (the routed form of `x`).
        """
        if input_signature is None:
            input_signature = [self._input_signature()]
        return super().export(
            filepath,
            format=format,
            verbose=verbose,
            input_signature=input_signature,
            **kwargs,
        )

    def _input_signature(self):
        specs = {}
        for name, model in self._submodels.items():
            try:
                inputs = model.inputs
            except (AttributeError, ValueError):
                inputs = None
            if not inputs:
                raise ValueError(
                    f"Cannot read the input signature of submodel {name!r} "
                    "(it has no `inputs`); pass `input_signature` to "
                    "`export()`."
                )
            inputs = inputs[0] if len(inputs) == 1 else inputs
            specs[name] = keras.tree.map_structure(
                lambda t: keras.InputSpec(shape=t.shape, dtype=t.dtype), inputs
            )

        def key(spec):
            return [(s.shape, s.dtype) for s in keras.tree.flatten(spec)]

        first = next(iter(specs.values()))
        if all(key(spec) == key(first) for spec in specs.values()):
            return first
        return specs

    def predict(self, x, *args, **kwargs):
        outputs = super().predict(x, *args, **kwargs)
        return self._in_submodel_order(outputs)

    def predict_on_batch(self, x):
        return self._in_submodel_order(super().predict_on_batch(x))

    def _in_submodel_order(self, outputs):
        # JAX flattens dicts in sorted key order; keep the user's order.
        return {name: outputs[name] for name in self._submodels}

    def _route_inputs(self, inputs):
        names = list(self._submodels)
        if isinstance(inputs, dict):
            keys = set(inputs)
            if keys == set(names):
                return inputs
            if keys & set(names):
                missing = [n for n in names if n not in keys]
                raise ValueError(
                    "When `x` is a dict keyed by submodel name, it needs one "
                    f"entry per submodel; missing: {missing}. To give the "
                    "same dict input to every submodel, use keys that name "
                    f"no submodel. Submodels are {names}. Received keys: "
                    f"{sorted(keys)}"
                )
        return {name: inputs for name in names}

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        loss_weights=None,
        metrics=None,
        weighted_metrics=None,
        run_eagerly=False,
        steps_per_execution=1,
        jit_compile="auto",
        auto_scale_loss=True,
        joint_losses=None,
        update_every=None,
        missing_label=None,
        weighting=None,
    ):
        """Configures the joint model for training.

        Args:
            optimizer: String (name of optimizer) or optimizer instance
                for the trainable variables of all submodels, or a dict
                mapping submodel names to their own optimizers. A variable
                used by several submodels is updated once per step, by the
                optimizer of the first of them (in submodel order) that has
                one; submodels made only of other submodels' layers (a GAN's
                `discriminator(generator(z))`) need no entry.
            loss: A Keras loss (string, function or `keras.losses.Loss`)
                for every submodel, or a dict mapping submodel names to
                losses. Submodels absent from the dict get no supervised
                loss.
            loss_weights: Optional number for every submodel, list in
                submodel order, or dict mapping submodel names to
                non-negative finite numbers. Defaults to 1.0 each.
            metrics: Metrics for every submodel (a list, as in
                `keras.Model.compile`), or a dict mapping submodel names to
                lists of metrics. Logged as `{name}_{metric}`.
            weighted_metrics: Same as `metrics`, weighted by `sample_weight`.
            run_eagerly: Bool. If `True`, the step is not compiled.
            steps_per_execution: Int. Batches run per compiled call.
            jit_compile: Bool or `"auto"`, as in `keras.Model.compile`.
            auto_scale_loss: Bool. Wrap the optimizer in a
                `LossScaleOptimizer` under the `"mixed_float16"` policy.
            joint_losses: Optional list of loss terms over several
                submodels' outputs: `jk.JointLoss` objects (or callables
                `fn(y_true, y_pred)`, weight 1.0), each logged as
                `{name}_loss`. `y_pred` is the dict of all outputs.
                A `jk.JointLoss(..., updates=[names])` moves only the
                variables of the named submodels.
            update_every: Optional update schedule: a dict mapping submodel
                names to a positive int `k` (updated on steps 0, k, 2k, ...)
                or a callable `fn(step) -> bool`, or one callable
                `fn(step) -> dict` of such booleans. A submodel that is not
                due keeps its variables and its optimizer state unchanged.
                Each scheduled submodel gets its own optimizer (a copy of
                `optimizer` unless a dict is given).
            missing_label: `None` (default) or `"nan"`: rows whose target
                for a submodel contains a NaN are unlabelled for it. Rows
                can also be marked per submodel in `y` as
                `{name: {"target": t, "mask": m}}` (`m` true where
                labelled). Unlabelled rows add nothing to that submodel's
                loss and metrics, whose means are over the labelled rows
                (a batch with none gives 0).
            weighting: How the tasks (each submodel's loss and each joint
                loss) are weighted: `None` or `"fixed"` (the compiled
                weights, kept live in `loss_weights_variable`), or a
                strategy from `jk.weighting` (object or name). Strategies
                other than fixed log `{task}_weight`.

        Raises:
            ValueError: If a dict key names no submodel, or a loss weight
                is negative or not finite.
            TypeError: If a loss weight is not a number.
        """
        names = list(self._submodels)
        losses = _compile_utils.per_submodel(loss, names, "loss")
        weights = _compile_utils.standardize_loss_weights(loss_weights, losses, names)
        metrics_by_name = _compile_utils.per_submodel(metrics, names, "metrics")
        weighted_by_name = _compile_utils.per_submodel(
            weighted_metrics, names, "weighted_metrics"
        )
        joint_terms = _compile_utils.standardize_joint_losses(joint_losses, names)
        _compile_utils.check_missing_label(missing_label)
        strategy = weighting_module.get(weighting)
        routed = any(term.updates is not None for term in joint_terms)
        if strategy.gradient_level and routed:
            raise ValueError(
                f"`weighting={strategy.name!r}` combines per-task gradients, "
                "which does not go with joint losses that set `updates`."
            )
        super().compile(
            optimizer=self._build_optimizer(optimizer, update_every),
            run_eagerly=run_eagerly,
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
            auto_scale_loss=auto_scale_loss,
        )
        if strategy.gradient_level and _accumulates_gradients(self.optimizer):
            raise ValueError(
                f"`weighting={strategy.name!r}` combines the tasks' gradients "
                "of each batch, so with `gradient_accumulation_steps` it would "
                "combine each micro-batch's and not match the large batch. "
                "Use a larger batch, or a loss-level strategy. Received: "
                f"optimizer={optimizer!r}"
            )
        # Keras's own training steps call `self._compile_loss` inside
        # `compute_loss`, build both containers before the first step, and
        # list their trackers in `self.metrics`.
        self._compile_loss = None
        self._set_weighting(None)
        tasks = _compile_utils.task_names(losses, joint_terms)
        if tasks:
            base = [weights[n] for n in names if losses[n] is not None]
            strategy.build_for_tasks(tasks, base + [t.weight for t in joint_terms])
            self._set_weighting(strategy)
            self._compile_loss = _compile_utils.SubmodelLosses(
                losses, joint_terms, strategy, missing_label=missing_label
            )
        self._step_kind = "keras"
        if routed:
            self._step_kind = "routed"
        elif strategy.gradient_level and tasks:
            self._step_kind = "gradient"
        self._compile_metrics = None
        if metrics is not None or weighted_metrics is not None:
            self._compile_metrics = _compile_utils.SubmodelMetrics(
                metrics_by_name, weighted_by_name, missing_label=missing_label
            )
        self.loss = loss
        self._joint_compile_args = dict(
            optimizer=optimizer if isinstance(optimizer, dict) else self.optimizer,
            loss=loss,
            loss_weights=loss_weights,
            metrics=metrics,
            weighted_metrics=weighted_metrics,
            run_eagerly=run_eagerly,
            steps_per_execution=steps_per_execution,
            jit_compile=self.jit_compile,
            joint_losses=joint_losses,
            update_every=update_every,
            missing_label=missing_label,
            weighting=weighting,
        )

    def _set_weighting(self, strategy):
        # Untrack a previous strategy (compiled again), so that its
        # variables leave the model: deleting the attribute is not enough.
        previous = getattr(self, "_weighting", None)
        if previous is not None:
            del self._weighting
            self._tracker.untrack(previous)
            if any(layer is previous for layer in self._layers):
                self._layers.remove(previous)
        self._weighting = strategy

    def _build_optimizer(self, optimizer, update_every):
        """Returns the optimizer to give Keras, a `SubmodelOptimizer` when
        there is one per submodel."""
        if not isinstance(optimizer, dict) and update_every is None:
            return optimizer
        names = list(self._submodels)
        if isinstance(optimizer, dict):
            _compile_utils.check_keys(optimizer, names, "optimizer")
            covered = {
                id(v)
                for name in optimizer
                for v in self._submodels[name].trainable_variables
            }
            missing = [
                name
                for name in names
                if any(
                    id(v) not in covered
                    for v in self._submodels[name].trainable_variables
                )
            ]
            if missing:
                raise ValueError(
                    "When `optimizer` is a dict, every trainable variable needs "
                    "a submodel with an optimizer; the submodels "
                    f"{missing} have variables no optimizer updates. Add "
                    f"entries for them. Received: optimizer={optimizer!r}"
                )
        else:
            optimizer = keras.optimizers.get(optimizer)
            config = keras.saving.serialize_keras_object(optimizer)
            optimizer = {
                name: keras.saving.deserialize_keras_object(config) for name in names
            }
        owners = [name for name in names if name in optimizer]
        optimizer = SubmodelOptimizer(optimizer, update_every=update_every)
        optimizer.set_owner_function(self._variable_owner_function(owners))
        return optimizer

    def _variable_owner_function(self, owners):
        """`fn(variable) -> name` of the first of `owners` that uses it."""
        owner_by_id = {}

        def owner_of(variable):
            if not owner_by_id:
                for name in reversed(owners):
                    for v in self._submodels[name].trainable_variables:
                        owner_by_id[id(v)] = name
            # Variables of no submodel (a weighting strategy's) go to the
            # first optimizer.
            return owner_by_id.get(id(variable), owners[0])

        return owner_of

    def train_step(self, *args):
        # Joint losses with `updates` need one gradient per group of
        # updated submodels, gradient-level weighting one per task;
        # everything else is Keras's own step. On JAX, Keras's step would
        # give a submodel that no loss reaches zero gradients, which an
        # optimizer with momentum would still apply: route those steps too,
        # so that the submodel gets none, as on TensorFlow and PyTorch.
        _, y, _ = keras.utils.unpack_x_y_sample_weight(args[-1])
        self._trace.unreached = _routing.unreached_variables(self, y)
        if self._step_kind == "routed" or (
            self._trace.unreached and keras.backend.backend() == "jax"
        ):
            outputs = _backend.train_step(self, *args)
        elif self._step_kind == "gradient":
            outputs = _backend.gradient_step(self, *args)
        else:
            outputs = super().train_step(*args)
        return _backend.step_logs(outputs)

    def test_step(self, *args):
        return _backend.step_logs(super().test_step(*args))

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        **kwargs,
    ):
        callbacks = list(callbacks or [])
        if self._weighting is not None and self._weighting.needs_epoch_end:
            callbacks.insert(0, _WeightingEpochEnd())
        return super().fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            callbacks=callbacks,
            **kwargs,
        )

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # TensorFlow only. Keras 3 builds losses and metrics under a
        # strategy from the mean of a distributed batch over replicas,
        # which fails under `MultiWorkerMirroredStrategy`
        # (keras-team/keras#20585); only shapes matter: take the first
        # replica's batch.
        if iterator is not None and self._distribute_strategy is not None:
            iterator, data_batch = None, _backend.first_replica_batch(iterator)
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        groups = self._compute_loss_groups(x, y, y_pred, sample_weight, training)
        losses = list(groups.values())
        return sum(losses[1:], losses[0])

    def _compute_loss_groups(self, x, y, y_pred, sample_weight, training=True):
        """Returns the loss split by what it updates, as a dict.

        Key `None`: the terms that update every variable they reach
        (submodel losses, joint losses without `updates`, regularization,
        `compute_joint_loss`). Key `(names...)`: the joint losses that
        update only those submodels.
        """
        everything, routed = [], {}
        if self._compile_loss is not None:
            self._compile_loss.training = training
            value = self._compile_loss(y, y_pred, sample_weight)
            if value is not None:
                everything.append(value)
            routed = self._compile_loss.routed_losses
        everything.extend(self._aggregate_additional_loss(loss) for loss in self.losses)
        extra = self.compute_joint_loss(x, y, y_pred, sample_weight)
        if extra is not None:
            everything.append(extra)
        groups = {}
        if everything:
            groups[None] = sum(everything[1:], everything[0])
        groups.update(routed)
        if not groups:
            if keras.backend.backend() != "jax":
                raise ValueError(
                    "No loss to compute. Provide `loss` or `joint_losses` in "
                    "`compile()`, or override `compute_joint_loss`."
                )
            groups[None] = keras.ops.zeros(())
        self._trace.loss_groups = groups
        return groups

    def compute_joint_loss(self, x, y, y_pred, sample_weight):
        """Override to add a loss term the built-in joint losses don't cover.

        Called on every train and test step, after the outputs of all
        submodels are computed; the returned scalar is added to the total
        loss. Write it with `keras.ops` so that it runs on every backend.
        The default adds nothing.

        Args:
            x: The input batch, as given.
            y: The targets, as given (a tensor, a dict, or `None`).
            y_pred: Dict mapping each submodel name to its output.
            sample_weight: The sample weights, as given, or `None`.

        Returns:
            A scalar tensor, or `None` for no extra term.

        Example:

        ```python
        class Agreement(jk.JointModel):
            def compute_joint_loss(self, x, y, y_pred, sample_weight):
                diff = y_pred["a"] - y_pred["b"]
                return 0.1 * keras.ops.mean(keras.ops.square(diff))
        ```
        """
        return None

    @property
    def loss_weights(self):
        """Dict of the current base weight of each submodel with a loss."""
        weights = self.task_weights
        return {name: weights[name] for name in self._submodels if name in weights}

    @property
    def task_names(self):
        """Names of the tasks: submodels with a loss, then joint losses."""
        return list(self._weighting.task_names) if self._weighting else []

    @property
    def task_weights(self):
        """Dict of the current base weight of every task (as floats)."""
        if self._weighting is None:
            return {}
        values = keras.ops.convert_to_numpy(self._weighting.base_weights)
        return {name: float(v) for name, v in zip(self.task_names, values)}

    @property
    def loss_weights_variable(self):
        """The `keras.Variable` of the base weight of each task, in
        `task_names` order; assign to it to reweight during training."""
        if self._weighting is None:
            raise ValueError(
                "`loss_weights_variable` exists once `compile()` has given "
                "the model a loss."
            )
        return self._weighting.base_weights

    def get_compile_config(self):
        if self.compiled and hasattr(self, "_joint_compile_args"):
            return keras.saving.serialize_keras_object(self._joint_compile_args)
        return {}

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        config = super().get_config()
        submodels, shared = _serialization.serialize_submodels(self._submodels)
        config["submodels"] = submodels
        if shared:
            config["shared_layers"] = shared
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["submodels"] = _serialization.deserialize_submodels(
            config["submodels"],
            config.pop("shared_layers", None),
            custom_objects=custom_objects,
        )
        return cls(**config)


def _standardize_submodels(submodels):
    """Validates `submodels` and returns a dict name -> model."""
    if isinstance(submodels, (list, tuple)):
        for i, model in enumerate(submodels):
            _check_is_model(model, f"submodels[{i}]")
        named = {}
        for model in submodels:
            if model.name in named:
                raise ValueError(
                    "Models given as a list are named by their `.name`, "
                    f"and two have the name {model.name!r}. Give them "
                    "distinct names, or pass a dict "
                    "`{name: model}`."
                )
            named[model.name] = model
    elif isinstance(submodels, dict):
        named = dict(submodels)
    else:
        raise TypeError(
            "`submodels` must be a dict `{name: keras.Model}` or a list of "
            f"`keras.Model`. Received: submodels={submodels!r} of type "
            f"{type(submodels).__name__}"
        )
    if not named:
        raise ValueError(
            "`submodels` must contain at least one model. "
            f"Received: submodels={submodels!r}"
        )
    for name, model in named.items():
        if not isinstance(name, str) or not name:
            raise TypeError(
                "Submodel names must be non-empty strings. "
                f"Received the name {name!r} of type {type(name).__name__}"
            )
        if name == _RESERVED_PREFIX or name.startswith(_RESERVED_PREFIX + "_"):
            raise ValueError(
                f"The submodel name {name!r} would collide with validation "
                "logs (`val_...`). Choose another name."
            )
        _check_is_model(model, f"submodels[{name!r}]")
    return named


def _accumulates_gradients(optimizer):
    """Whether `optimizer` (or one it wraps) accumulates gradients."""
    inner = list(getattr(optimizer, "optimizers", []))
    if hasattr(optimizer, "inner_optimizer"):
        inner.append(optimizer.inner_optimizer)
    return bool(optimizer.gradient_accumulation_steps) or any(
        _accumulates_gradients(o) for o in inner if o is not optimizer
    )


def _check_is_model(model, where):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{where}` must be a `keras.Model`. Received: {model!r} of "
            f"type {type(model).__name__}"
        )


# Lets the step tell an override of `compute_joint_loss` from the default.
JointModel.compute_joint_loss.is_default = True


class _WeightingEpochEnd(keras.callbacks.Callback):
    """Lets an epoch-based strategy (such as `DWA`) roll its statistics."""

    def on_epoch_end(self, epoch, logs=None):
        self.model._weighting.on_epoch_end()
