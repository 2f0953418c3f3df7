"""`JointModel`: several Keras models trained together as one Keras model."""

import functools
import types

import keras

from joint_keras import _compat
from joint_keras import backend
from joint_keras import callbacks as callbacks_module
from joint_keras._compile import spec as _spec
from joint_keras._graph import inputs as _inputs
from joint_keras._graph.graph import SubmodelGraph
from joint_keras._graph.representation import for_model as representation_for
from joint_keras._logs.submodel_metrics import SubmodelMetrics
from joint_keras._saving import saving as _saving
from joint_keras._saving import serialization as _serialization
from joint_keras._step import step as _step
from joint_keras._step import updates as _updates
from joint_keras._step.task_losses import TaskLosses
from joint_keras._step.task_losses import step_losses
from joint_keras._step.variables import VariableIndex
from joint_keras.submodel_optimizer import build_optimizer
from joint_keras.submodel_optimizer import check_accumulation


@keras.saving.register_keras_serializable(package="joint_keras")
class JointModel(_compat.TrainerFixes, _saving.SavingMixin, keras.Model):
    """Trains several Keras models jointly on a weighted shared objective.

    `JointModel` wraps a dict of submodels into one `keras.Model`, so joint
    training keeps `compile()`, `fit()`, `evaluate()`, `predict()`,
    callbacks, saving, and the Keras training loop of every backend. The
    submodels are the objects you pass in; they are trained in place.

    Each step, every submodel gets the input (or its own entry of a dict or
    list input), and the optimizer minimizes `sum_k weight_k * loss_k` plus
    the regularization losses, over the tasks `k` (each submodel's compiled
    loss and each joint loss). A variable several submodels share is
    updated once per step, with the gradient of the whole objective.

    Logs: `loss` (the weighted total), `{name}_loss` (each task's unweighted
    loss), `{name}_{metric}`, `{name}_weight` (with a weighting strategy),
    `grad_cos/{a}/{b}` (with a gradient-level one), and their `val_` twins.

    Args:
        submodels: Dict mapping a name to a `keras.Model`, or a list of
            models named by their `.name`. A name may not be `"val"` or
            start with `"val_"`, nor contain `"/"` (it would collide in the
            logs).
        inputs: Optional dict mapping a submodel name to what it takes as
            input: another submodel's output (its name), `jk.INPUT` (its
            entry of `x`, the default), `jk.Noise(shape)`, `jk.Concat(...)`
            of these, or a list or dict of them. Each submodel runs once
            per step, after those it reads (a shared trunk computed once).
        **kwargs: Passed to `keras.Model` (for example `name`).

    Example:

    ```python
    def mlp(units):
        layers = [keras.layers.Dense(units, "relu"), keras.layers.Dense(1)]
        return keras.Sequential([keras.Input((8,)), *layers])

    x, y = np.random.rand(256, 8), np.random.rand(256, 1)
    model = jk.JointModel({"model1": mlp(32), "model2": mlp(16)})
    model.compile(
        optimizer="adam",
        loss={"model1": "mse", "model2": "mae"},
        loss_weights={"model1": 0.7, "model2": 0.3},
        metrics={"model1": ["mae"], "model2": ["mse"]},
    )
    model.fit(x, y, epochs=3, validation_split=0.2, verbose=0)
    predictions = model.predict(x, verbose=0)  # {"model1": array, "model2": array}
    ```
    """

    def __init__(self, submodels, inputs=None, **kwargs):
        super().__init__(**kwargs)
        submodels = _serialization.standardize_submodels(submodels)
        self._graph = SubmodelGraph(list(submodels), inputs)
        self._graph.check_outputs(submodels)
        # Tracked, so that noise advances in JAX steps and is saved.
        self._noise_seeds = [n.seed_generator for n in self._graph.noises]
        # Tracked in name order first: weights files store layers by
        # position, so any dict order of the same names matches.
        self._by_name = [submodels[name] for name in sorted(submodels)]
        self._submodels = submodels
        self._spec = self._weighting = self._task_losses = self._index = None
        self._split = None
        self._loss_seeds = []
        # Built when its submodels are (it has no variables of its own).
        if all(model.built for model in self._submodels.values()):
            self.built = True

    @property
    def submodels(self):
        """Read-only dict of the wrapped models, keyed by name."""
        return types.MappingProxyType(dict(self._submodels))

    def call(self, inputs, training=None):
        return self._forward(inputs, training)[0]

    def _routed(self, inputs):
        """Each submodel's entry of `inputs`, for those that take one."""
        takers = {n: self._submodels[n] for n in self._graph.takes_input}
        return _inputs.route(inputs, takers) if takers else {}

    def _forward(self, inputs, training, probes=None):
        """`(outputs, outputs before probes)` of the submodel graph."""
        routed = self._routed(inputs)
        shared = all(value is inputs for value in routed.values())
        fused = None if probes else self._graph.fuse(self._submodels, shared)
        if fused is not None:
            return fused.call(inputs if shared else routed, training=training), {}
        rows = keras.ops.shape(keras.tree.flatten(inputs)[0])[0]
        hint = functools.partial(_serialization.shared_layers_hint, self._submodels)
        return self._graph.run(self._submodels, routed, rows, training, probes, hint)

    predict = backend.keeping_state(keras.Model.predict, in_submodel_order=True)
    predict_on_batch = backend.keeping_state(keras.Model.predict_on_batch, True)

    def export(self, filepath, format="tf_saved_model", input_signature=None, **kw):
        """As `keras.Model.export`; the default `input_signature` is read from
        the submodels' inputs (a dict by name unless all take the same)."""
        signature = input_signature or [
            _inputs.input_signature(self._submodels, self._graph)
        ]
        return super().export(filepath, format=format, input_signature=signature, **kw)

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
        alternate=None,
    ):
        """Configures the joint model for training.

        `loss`, `loss_weights`, `metrics` and `weighted_metrics` take one
        value for every submodel, a dict keyed by submodel name, or a list
        in submodel order (for `metrics`, a list of lists); a multi-output
        submodel's entry may be nested by output, as in
        `keras.Model.compile`. `optimizer` takes one optimizer or a dict.

        Args:
            optimizer: Optimizer (name or instance), or a dict giving
                submodels their own; a variable several submodels use is
                updated once per step, by the first of them that has one.
            loss: Keras loss(es); a submodel without one has none.
            loss_weights: Non-negative finite weights; default 1.0.
            metrics: Keras metrics, logged as `{name}_{metric}`.
            weighted_metrics: Keras metrics weighted by `sample_weight`,
                logged as `{name}_{metric}`.
            run_eagerly: As in `keras.Model.compile`.
            steps_per_execution: As in `keras.Model.compile`.
            jit_compile: As in `keras.Model.compile`.
            auto_scale_loss: As in `keras.Model.compile`.
            joint_losses: List of `jk.JointLoss` (or callables
                `fn(y_true, y_pred)`) over several submodels' outputs.
            update_every: `{name: k}` (update on steps 0, k, 2k, ...) or
                `{name: fn(step) -> bool}`, or one `fn(step) -> dict`. A
                submodel not due keeps its variables and optimizer state.
            missing_label: `None` or `"nan"`: rows whose target has a NaN
                (or, in any case, rows marked false in a `y` entry
                `{"target": t, "mask": m}`) are unlabelled for that
                submodel: they add nothing to its loss, logs and metrics,
                and a batch with none labelled leaves its variables and
                optimizer state alone.
            weighting: `None`/`"fixed"`, or a strategy from `jk.weighting`.
            alternate: `None` (default): the groups of joint losses with
                `updates=` get their gradients from one forward pass and are
                applied together. `True`, or a list of groups (a submodel
                name each; `None` for the terms without `updates`), e.g.
                `["disc"] * 3 + ["gen"]`: applied in turn, each after a
                fresh forward pass through the submodels already updated.

        Raises:
            ValueError, TypeError: for an argument that does not fit the
                submodels, naming the argument and the submodel.
        """
        arguments = {k: v for k, v in locals().items() if k != "self"}
        spec = _spec.compile_spec(
            list(self._submodels), _inputs.output_counts(self._submodels), **arguments
        )
        super().compile(
            optimizer=build_optimizer(optimizer, spec, self),
            run_eagerly=run_eagerly,
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
            auto_scale_loss=auto_scale_loss,
        )
        check_accumulation(spec, self.optimizer, optimizer)
        _updates.check_layout(spec, self)
        for old in [self._weighting, *self._loss_seeds]:
            if old is not None and old is not spec.weighting:
                _compat.untrack(self, old)
        # Tracked: a joint loss's random draws advance in JAX steps, are saved.
        self._loss_seeds = [g for t in spec.joint_losses for g in t.seed_generators()]
        spec.weighting.build_for_tasks(spec.task_names, spec.base_weights)
        self._weighting, self._spec, self._split = spec.weighting, spec, None
        self._task_losses = TaskLosses(
            spec, spec.weighting, _inputs.output_names(self._submodels)
        )
        metrics = SubmodelMetrics(spec) if SubmodelMetrics.wanted(spec) else None
        _compat.attach_containers(self, self._task_losses, metrics)
        self._step = _step.for_kind(spec.kind)
        self.loss = loss
        self._compile_args = {**arguments, "jit_compile": self.jit_compile}

    @property
    def weighting(self):
        """The compiled `jk.weighting` strategy (`None` before `compile()`)."""
        return self._weighting

    def _variable_index(self):
        # Built again only when the trainable variables change.
        ancestors = {n: self._graph.ancestors(n) for n in self._submodels}
        self._index = VariableIndex.of(
            self._submodels, self.trainable_variables, ancestors, self._index
        )
        return self._index

    def _representation_split(self):
        name = self._weighting.representation
        if name is not None and self._split is None:
            self._split = representation_for(self, name)
        return self._split

    def train_step(self, *args):
        return backend.run_step(self, lambda data: self._step(self, data), args)

    def test_step(self, *args):
        return backend.run_step(self, lambda data: _step.test_step(self, data), args)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto",
            callbacks=None, **kwargs):  # fmt: skip
        callbacks = callbacks_module.with_strategy_callbacks(callbacks, self)
        with backend.keep_state_on_error(self):
            return super().fit(x, y, batch_size, epochs, verbose, callbacks, **kwargs)

    evaluate = backend.keeping_state(keras.Model.evaluate)
    train_on_batch = backend.keeping_state(keras.Model.train_on_batch)
    test_on_batch = backend.keeping_state(keras.Model.test_on_batch)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):  # fmt: skip
        return step_losses(self, x, y, y_pred, sample_weight, training).total

    def _has_custom_loss(self):
        return type(self).compute_loss is not JointModel.compute_loss

    def compute_joint_loss(self, x, y, y_pred, sample_weight):
        """Override to add a loss term the built-in joint losses don't cover.

        Called on every train and test step after all submodels' outputs are
        computed; the returned scalar (written with `keras.ops`) is added to
        the total loss. The default adds nothing.

        Args:
            x: The input batch, as given.
            y: The targets, as given (a tensor, a dict, or `None`).
            y_pred: Dict mapping each submodel name to its output.
            sample_weight: The sample weights, as given, or `None`.

        Returns:
            A scalar tensor, or `None` for no extra term.
        """
        return None

    @property
    def task_names(self):
        """Names of the tasks: submodels with a loss, then joint losses."""
        return list(self._spec.task_names) if self._spec else []

    @property
    def task_weights(self):
        """Dict of the current weight of every task (as floats)."""
        return self._weighting.current_weights() if self._weighting else {}

    @property
    def loss_weights(self):
        """Dict of the current weight of each submodel with a loss."""
        weights = self.task_weights
        return {name: weights[name] for name in self._submodels if name in weights}

    @property
    def task_weights_variable(self):
        """The raw `keras.Variable` of the task weights (`task_names` order).
        Assignments to it are not checked: use `set_task_weights`."""
        return self._weighting.base_weights

    def set_task_weights(self, weights):
        """Sets some tasks' weights (a dict name -> non-negative finite
        number) from the next step on, without recompiling. Raises
        `ValueError` or `TypeError` for an unknown task or a bad weight."""
        self._weighting.assign_task_weights(weights)

    def get_config(self):
        config = _serialization.config(self._submodels, self._graph)
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**_serialization.from_config(config, custom_objects))
