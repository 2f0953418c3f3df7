"""The loss of one step, task by task, returned as a value (`StepLosses`)."""

import functools
from typing import NamedTuple

import keras
from keras import ops

from joint_keras import _compat
from joint_keras import backend
from joint_keras._logs.trackers import LossTrackers
from joint_keras._logs.trackers import TotalLoss
from joint_keras._step import combine as _combine
from joint_keras._step import targets as _targets
from joint_keras._step import variables as _variables
from joint_keras.weighting.base import Weighting

# The routing group of the terms that update every variable they reach.
EVERYTHING = ()


class StepLosses(NamedTuple):
    """One step's losses, from the loss computation to the rest of the step.

    Attributes:
        total: Scalar tensor, the weighted total loss (what the optimizer
            minimizes; per replica under `tf.distribute`).
        groups: Dict mapping a routing group to the part of `total` it
            updates: `()` for the terms that update every variable they
            reach, a tuple of submodel names for the joint losses declared
            with `updates=`. Sums to `total`. A strategy's own term (as
            Uncertainty's) goes with the group of its tasks.
        tasks: Tensor `(n,)`, the weighted losses of the `n` tasks that had
            a loss in this step (`None` when none had).
        indices: Python tuple of the `n` tasks' positions in `task_names`.
        weights: Tensor `(n,)`, their effective weights.
        raw: Tensor `(n,)`, their unweighted losses on the global batch,
            with no gradient (what a weighting strategy reads).
        labelled: Tensor `(n,)`, the number of rows with a label for each,
            or `None` when every task had every row labelled.
        others: Scalar tensor, the terms of `total` that are no task
            (regularization, `compute_joint_loss`, a strategy's own term),
            or `None`.
        flagged: Python tuple of the positions (in `indices`) of the
            submodel tasks whose batch may have no labelled row.
        present: Boolean tensor `(n,)`, which tasks had a labelled row
            (`None` when none is flagged).
        unflagged: Scalar tensor, the terms of group `()` other than the
            submodels' own losses (joint losses, `others`), or `None`: which
            variables they reach decides which updates labels gate.
    """

    total: object
    groups: dict
    tasks: object = None
    indices: tuple = ()
    weights: object = None
    raw: object = None
    labelled: object = None
    others: object = None
    flagged: tuple = ()
    present: object = None
    unflagged: object = None

    def only(self, names, task_names, with_others):
        """The same losses restricted to the tasks `names` (and the other
        terms if `with_others`), for logging one group of a step."""
        keep = [i for i, k in enumerate(self.indices) if task_names[k] in names]
        others = self.others if with_others else None
        parts = [] if others is None else [others]
        if not keep:
            total = sum(parts[1:], parts[0]) if parts else None
            return StepLosses(total, {}, others=others)
        select = ops.array(keep)
        tasks = ops.take(self.tasks, select)
        total = sum(parts, ops.sum(tasks))
        labelled = None if self.labelled is None else ops.take(self.labelled, select)
        return StepLosses(
            total,
            {},
            tasks,
            tuple(self.indices[i] for i in keep),
            ops.take(self.weights, select),
            ops.take(self.raw, select),
            labelled,
            others,
        )


class StepContext(NamedTuple):
    """What a joint loss declared `with_context=True` gets besides the
    targets and outputs.

    Attributes:
        submodels: Read-only dict name -> submodel.
        inputs: Dict name -> that submodel's entry of the input `x`, for
            the submodels that take one.
        state: Callable returning every variable of the step (for
            `input_gradient` on JAX).
    """

    submodels: object
    inputs: dict
    state: list

    def input_gradient(self, fn, inputs):
        """The gradient of `sum(fn(inputs))` with respect to `inputs`, on
        every backend, itself differentiable (a gradient penalty)."""
        return backend.input_gradient(fn, inputs, self.state)


class TaskLosses(keras.losses.Loss):
    """Each submodel's supervised loss and each joint loss, weighted by a
    strategy, and their trackers.

    Calling it returns a `StepLosses`. It is a Keras `Loss` that Keras's
    trainer builds symbolically before the first step (through
    `JointModel.compute_loss`), so that every variable exists before tracing.

    Args:
        spec: The `CompileSpec`.
        weighting: A `jk.weighting.Weighting` built for `spec.task_names`.
        output_names: Optional dict name -> output names of the submodels
            that return a list of several outputs.
    """

    def __init__(self, spec, weighting, output_names=None):
        super().__init__(name="joint_loss")
        self.spec = spec
        self.weighting = weighting
        self.task_names = list(spec.task_names)
        output_names = output_names or {}
        self.losses = {
            name: _compat.compile_loss(
                loss, spec.output_loss_weights[name], output_names.get(name)
            )
            for name, loss in spec.losses.items()
            if loss is not None
        }
        self.group_of = {
            name: key for key, tasks in spec.group_tasks.items() for name in tasks
        }
        self.trackers = LossTrackers(
            self.task_names,
            report_weights=type(weighting).__name__ != "Fixed",
            report_cosines=weighting.gradient_level,
        )
        self.total_tracker = TotalLoss(len(self.task_names))

    @property
    def built(self):
        # While False, Keras builds the losses symbolically before tracing
        # the first step of `fit()`/`evaluate()`.
        return all(loss.built for loss in self.losses.values())

    @property
    def metrics(self):
        return [self.trackers]

    @property
    def variables(self):
        return self.trackers.variables

    def __call__(self, y_true, y_pred, sample_weight=None, training=True, **kwargs):
        return self.call(y_true, y_pred, sample_weight, training, **kwargs)

    def call(
        self,
        y_true,
        y_pred,
        sample_weight=None,
        training=True,
        others=(),
        track=None,
        tasks=None,
        context=None,
    ):
        """Computes the step's losses and updates the trackers.

        Args:
            y_true: The targets as given (a tensor, list, dict or `None`).
            y_pred: Dict of every submodel's output.
            sample_weight: As given to `fit()`.
            training: Python bool.
            others: List of other scalar terms of the total (regularization,
                `compute_joint_loss`), already scaled per replica.
            track: Optional collection of the task names whose trackers this
                call updates (all by default): an alternating step logs each
                group once, from the pass that updates it.
            tasks: Optional collection of the task names to compute (all by
                default): an alternating step's pass computes its group's.
            context: A `StepContext`, for joint losses that ask for one.

        Returns:
            A `StepLosses`.
        """
        values, labelled = self._task_values(
            y_true, y_pred, sample_weight, track, tasks, context
        )
        indices = tuple(k for k, name in enumerate(self.task_names) if name in values)
        names = [self.task_names[k] for k in indices]
        if track is None:
            self.trackers.active = tuple(names)
        self.trackers.training = training
        flagged = tuple(i for i, name in enumerate(names) if labelled[name] is not None)
        groups = {}
        # The terms of no task; and, of group `()`, those not a submodel's.
        rest, unflagged = list(others), list(others)
        losses = weights = raw = rows = present = None
        if indices:
            losses = ops.stack([values[name] for name in names])
            # The strategy reads the losses of the global batch (each
            # replica's is scaled by `1 / num_replicas` under tf.distribute).
            raw = backend.cross_replica_sum(ops.stop_gradient(losses))
            if flagged:
                batch_rows = _targets.batch_size(y_pred)
                rows = ops.stack(
                    [
                        batch_rows if labelled[name] is None else labelled[name]
                        for name in names
                    ]
                )
                present = ops.greater(rows, 0.0)
            weights = self.weighting.weights_for_step(
                raw, list(indices), training, present, flagged
            )
            # Each task's term on its own (not a slice of one stacked tensor):
            # a group's sum then reaches only what its tasks reach, which
            # every backend's autodiff then sees.
            weighted = [values[name] * weights[i] for i, name in enumerate(names)]
            losses = ops.stack(weighted)
            self.trackers.update_weights(names, weights, track)
            by_group = {}
            for i, name in enumerate(names):
                key = self.group_of[name]
                by_group.setdefault(key, []).append(i)
                if key == EVERYTHING and name not in self.losses:
                    unflagged.append(weighted[i])
            for key, positions in by_group.items():
                if len(positions) == len(names):  # The common case: one sum.
                    groups[key] = ops.sum(losses)
                else:
                    groups[key] = _sum([weighted[i] for i in positions])
                extra = self.weighting.extra_loss([indices[i] for i in positions])
                if extra is not None:
                    extra = _compat.scale_loss_for_distribution(extra)
                    groups[key] = groups[key] + extra
                    rest.append(extra)
                    if key == EVERYTHING:
                        unflagged.append(extra)
        if others:
            part = _sum(list(others))
            groups[EVERYTHING] = (
                groups[EVERYTHING] + part if EVERYTHING in groups else part
            )
        if not groups:
            raise ValueError(
                "No loss to compute in this step: no submodel with a `loss` "
                "has targets, and there is no joint loss. Pass targets `y` "
                "(for the submodels given a `loss` in `compile()`), or add "
                "`joint_losses`."
            )
        parts = list(groups.values())
        total = sum(parts[1:], parts[0])
        return StepLosses(
            total,
            groups,
            losses,
            indices,
            weights,
            raw,
            rows,
            _sum(rest),
            flagged,
            present,
            _sum(unflagged) if flagged else None,
        )

    def combine(self, gram, jacobians, losses, rows_per_replica):
        """A gradient-level strategy's update for this step, from the
        active tasks' per-task gradients `jacobians` (one tensor `(n,
        *shape)` per shared tensor, this replica's) and their Gram matrix;
        logs their cosines and the effective weights.

        A strategy that combines the gradients themselves (GradDrop) gets
        the global batch's on shared variables (summed over `tf.distribute`
        replicas; not at a representation, whose rows are split over the
        replicas, `rows_per_replica`), and each replica contributes its
        share of the update, since the replicas' gradients are summed.

        Returns:
            `(updates, b)`: the update on each shared tensor, and the
            coefficients of the task gradients on the other variables.
        """
        names = [self.task_names[k] for k in losses.indices]
        self.trackers.update_cosines(names, _combine.cosine_matrix(gram))
        replicas = 1.0
        if type(self.weighting).combine is not Weighting.combine:
            if not rows_per_replica:
                jacobians, replicas = _combine.summed_over_replicas(jacobians)
        updates, a, b = self.weighting.combination(
            gram,
            jacobians,
            losses.raw,
            list(losses.indices),
            losses.present,
            losses.flagged,
        )
        if updates is None:
            a = ops.stop_gradient(a)
            self.trackers.update_weights(names, losses.weights * a)
            updates = [_combine.mix(a, j) for j in jacobians]
        else:
            updates = [u / ops.cast(replicas, u.dtype) for u in updates]
        updates = [ops.stop_gradient(u) for u in updates]
        return updates, ops.stop_gradient(b)

    def _task_values(self, y_true, y_pred, sample_weight, track, tasks, context):
        """Dicts task name -> unweighted loss, and -> labelled rows, for the
        tasks with a loss in this step (those in `tasks`, if given; trackers
        updated for `track`)."""
        names = list(self.spec.names)
        joint_names = [term.name for term in self.spec.joint_losses]
        targets = _targets.split(y_true, names, "y")
        sample_weights = _targets.split(
            sample_weight, names, "sample_weight", extra_keys=joint_names
        )
        batch_rows = _targets.batch_size(y_pred)
        values, labelled = {}, {}
        for name, loss in self.losses.items():
            if name not in targets or (tasks is not None and name not in tasks):
                continue
            target, prediction, rows = _targets.mask_unlabelled_rows(
                targets[name], y_pred[name], self.spec.missing_label
            )
            value = ops.cast(
                loss(target, prediction, sample_weights.get(name)), self.dtype
            )
            if len(loss.metrics) and name not in self.trackers.outputs:
                self.trackers.add_output_trackers(name, loss.metrics)
            if track is None or name in track:
                self.trackers.update_loss(
                    name,
                    _compat.unscale_loss_for_distribution(value),
                    batch_rows if rows is None else rows,
                )
            values[name], labelled[name] = value, rows
        shared_weight = None if isinstance(sample_weight, dict) else sample_weight
        for term in self.spec.joint_losses:
            if tasks is not None and term.name not in tasks:
                continue
            weight = sample_weights.get(term.name, shared_weight)
            # Like a Keras loss's, scaled per replica under tf.distribute.
            value = ops.cast(term(y_true, y_pred, weight, context), self.dtype)
            if track is None or term.name in track:
                self.trackers.update_loss(
                    term.name,
                    _compat.unscale_loss_for_distribution(value),
                    batch_rows,
                )
            values[term.name], labelled[term.name] = value, None
        return values, labelled


def step_losses(model, x, y, y_pred, sample_weight, training, track=None, tasks=None):
    """A joint model's `StepLosses`: its compiled tasks (those in `tasks`,
    if given), plus its regularization losses and `compute_joint_loss`."""
    others = [
        _compat.scale_loss_for_distribution(
            ops.sum(ops.cast(loss, keras.backend.floatx()))
        )
        for loss in model.losses
    ]
    extra = model.compute_joint_loss(x, y, y_pred, sample_weight)
    if extra is not None:
        others.append(_compat.scale_loss_for_distribution(extra))
    state = functools.partial(_variables.step_state, model)
    context = StepContext(model.submodels, model._routed(x), state)
    return model._task_losses(
        y,
        y_pred,
        sample_weight,
        training,
        others=others,
        track=track,
        tasks=tasks,
        context=context,
    )


def for_step(model, x, y, y_pred, sample_weight, training, track=None, tasks=None):
    """The step's `StepLosses`. An override of `compute_loss` is honoured,
    as `keras.Model` documents: its total updates every variable it
    reaches."""
    if model._has_custom_loss():
        total = model.compute_loss(x, y, y_pred, sample_weight, training=training)
        return StepLosses(total, {EVERYTHING: total}, others=total)
    return step_losses(model, x, y, y_pred, sample_weight, training, track, tasks)


def _sum(terms):
    """The sum of a list of tensors, or `None` for none."""
    return sum(terms[1:], terms[0]) if terms else None
