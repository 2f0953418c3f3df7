"""Per-submodel loss and metric containers used by `JointModel.compile()`.

Each submodel gets Keras's own `CompileLoss` and `CompileMetrics`, so a
submodel's `loss` and `metrics` entries mean exactly what they mean in
`keras.Model.compile()`. The containers here only split targets and sample
weights by submodel, apply the loss weights, and name the logs.
"""

import math
import threading

import keras
from keras import ops
from keras import tree

from joint_keras import backend
from joint_keras._keras_private import CompileLoss
from joint_keras._keras_private import CompileMetrics
from joint_keras._keras_private import MetricsList
from joint_keras._keras_private import scale_loss_for_distribution
from joint_keras._keras_private import set_keras_mask
from joint_keras._keras_private import unscale_loss_for_distribution
from joint_keras.joint_loss import JointLoss


def _format_names(names):
    return "[" + ", ".join(repr(n) for n in names) + "]"


def check_keys(mapping, names, argument):
    """Raises `ValueError` if a key of the dict `mapping` names no submodel."""
    unknown = [key for key in mapping if key not in names]
    if unknown:
        raise ValueError(
            f"`{argument}` has keys that name no submodel: "
            f"{_format_names(unknown)}. Submodels are "
            f"{_format_names(names)}. Received: {argument}={mapping!r}"
        )


def per_submodel(value, names, argument):
    """Spreads a compile argument over the submodels.

    A dict must be keyed by submodel names (missing names get `None`);
    anything else applies to every submodel.
    """
    if isinstance(value, dict):
        check_keys(value, names, argument)
        return {name: value.get(name) for name in names}
    return {name: value for name in names}


def standardize_loss_weights(loss_weights, losses, names):
    """Returns a dict of validated float loss weights, one per submodel.

    Args:
        loss_weights: `None`, a number applied to every submodel, a list or
            tuple in submodel order, or a dict keyed by submodel name
            (missing names get 1.0).
        losses: Dict of the resolved loss identifier per submodel.
        names: List of submodel names.

    Returns:
        Dict mapping each submodel name to a float.
    """
    if loss_weights is None:
        weights = {}
    elif isinstance(loss_weights, dict):
        check_keys(loss_weights, names, "loss_weights")
        weights = dict(loss_weights)
    elif isinstance(loss_weights, (list, tuple)):
        if len(loss_weights) != len(names):
            raise ValueError(
                "`loss_weights` given as a list must have one entry per "
                f"submodel ({len(names)}: {_format_names(names)}). "
                f"Received: loss_weights={loss_weights!r}"
            )
        weights = dict(zip(names, loss_weights))
    else:
        weights = {name: loss_weights for name in names}

    for name, weight in weights.items():
        check_weight(weight, f"submodel {name!r}", "loss_weights", loss_weights)
        if losses.get(name) is None and isinstance(loss_weights, dict):
            raise ValueError(
                f"`loss_weights` gives a weight to submodel {name!r}, but "
                f"`loss` gives it no loss. Received: loss_weights="
                f"{loss_weights!r}"
            )
    return {name: float(weights.get(name, 1.0)) for name in names}


def check_weight(weight, owner, argument, received):
    """Raises unless `weight` is a non-negative finite number."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TypeError(
            f"`{argument}` must be numbers; the weight of {owner} is "
            f"{weight!r} of type {type(weight).__name__}. "
            f"Received: {argument}={received!r}"
        )
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(
            f"`{argument}` must be non-negative and finite; the weight of "
            f"{owner} is {weight!r}. Received: {argument}={received!r}"
        )


def standardize_joint_losses(joint_losses, names):
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
        if term.name in names or term.name in seen:
            raise ValueError(
                f"Joint loss names must be unique and differ from submodel "
                f"names (each logs `{{name}}_loss`); {term.name!r} is taken "
                f"already. Submodels are {_format_names(names)}. Pass "
                "`name=` to `jk.JointLoss`."
            )
        if term.updates is not None:
            unknown = [u for u in term.updates if u not in names]
            if unknown:
                raise ValueError(
                    f"`updates` of joint loss {term.name!r} names no submodel: "
                    f"{_format_names(unknown)}. Submodels are "
                    f"{_format_names(names)}. Received: updates={term.updates!r}"
                )
        seen.add(term.name)
        result.append(term)
    return result


def split_by_submodel(value, names, argument):
    """Splits `y` or `sample_weight` into a dict keyed by submodel name.

    A dict is taken as keyed by submodel name: submodels absent from it get
    nothing. Anything else (a tensor, or a tuple for a multi-output
    submodel) is shared by every submodel. `None` gives an empty dict.
    """
    if value is None:
        return {}
    if isinstance(value, dict):
        check_keys(value, names, argument)
        return {name: value[name] for name in names if name in value}
    return {name: value for name in names}


MISSING_LABEL_MODES = (None, "nan")
_MASKED_TARGET_KEYS = {"target", "mask"}


def check_missing_label(missing_label):
    if missing_label not in MISSING_LABEL_MODES:
        raise ValueError(
            "`missing_label` must be None or 'nan' (rows whose target has a "
            f"NaN are unlabelled). Received: missing_label={missing_label!r}"
        )
    return missing_label


def mask_unlabelled_rows(target, y_pred, missing_label):
    """Masks the rows of one submodel's batch that have no label.

    A row is unlabelled where the target is given as
    `{"target": t, "mask": m}` with `m` false, or, with
    `missing_label="nan"`, where its target has a NaN. Such rows get a
    Keras mask on the predictions, so that Keras losses average over the
    labelled rows only (and give 0 when there are none) and metrics skip
    them; NaN targets are replaced by 0 so that no NaN reaches a gradient.

    Returns:
        Tuple `(target, y_pred)`, masked where needed.
    """
    mask = None
    if isinstance(target, dict) and set(target) == _MASKED_TARGET_KEYS:
        mask = _row_mask(target["mask"])
        target = target["target"]
    if missing_label == "nan":
        float_leaves = [t for t in tree.flatten(target) if _is_float(t)]
        for leaf in float_leaves:
            rows = _row_mask(ops.logical_not(ops.isnan(leaf)))
            mask = rows if mask is None else ops.logical_and(mask, rows)
        target = tree.map_structure(
            lambda t: (
                ops.where(ops.isnan(t), ops.zeros_like(t), t) if _is_float(t) else t
            ),
            target,
        )
    if mask is None:
        return target, y_pred

    def masked(prediction):
        # A copy, so that joint losses reading the same output see no mask.
        prediction = ops.copy(prediction)
        set_keras_mask(prediction, mask)
        return prediction

    return target, tree.map_structure(masked, y_pred)


def _is_float(x):
    return keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype))


def _row_mask(mask):
    """Reduces a mask to one boolean per row (batch entry)."""
    mask = ops.cast(ops.convert_to_tensor(mask), "bool")
    if len(mask.shape) > 1:
        mask = ops.all(mask, axis=tuple(range(1, len(mask.shape))))
    return mask


def _batch_size(y_pred):
    return ops.shape(tree.flatten(y_pred)[0])[0]


class _LastValue(keras.metrics.Metric):
    """Reports the last value it was given (a loss weight)."""

    def __init__(self, name):
        super().__init__(name=name)
        # The same on every replica: read the first one's.
        self.value = self.add_variable(
            shape=(),
            initializer="zeros",
            aggregation="only_first_replica",
            name="value",
        )

    def update_state(self, value):
        self.value.assign(ops.cast(value, self.value.dtype))

    def result(self):
        # A copy: Keras reads epoch logs after validation has run, which
        # would otherwise have changed (or, on JAX, donated) the value.
        return ops.copy(ops.convert_to_tensor(self.value))


class LossTrackers(MetricsList):
    """One `Mean` per task loss, logged as `{name}_loss`, and with
    `report_weights` the current weight of each task, `{name}_weight`.

    Only the tasks that had a loss in the step being traced are reported,
    so a submodel trained without targets does not log a stale or zero
    loss. Being a Keras `MetricsList` of metrics named as logged, with
    their direction, lets callbacks monitor `val_{name}_loss` in
    `mode="auto"`.
    """

    def __init__(self, names, report_weights=False, report_cosines=False):
        self._means = {name: keras.metrics.Mean(name=f"{name}_loss") for name in names}
        for mean in self._means.values():
            mean._direction = "down"
        self._weights = {}
        if report_weights:
            self._weights = {name: _LastValue(f"{name}_weight") for name in names}
        self._cosines = {}
        if report_cosines:
            self._cosines = {
                (a, b): _LastValue(f"grad_cos_{a}_{b}")
                for i, a in enumerate(names)
                for b in names[i + 1 :]
            }
        super().__init__(self._trackers(), name="submodel_losses")
        self.active = tuple(names)
        # Weights and gradient cosines describe training steps only.
        self.training = True

    def _trackers(self):
        return (
            list(self._means.values())
            + list(self._weights.values())
            + list(self._cosines.values())
        )

    @property
    def variables(self):
        return [v for m in self._trackers() for v in m.variables]

    def update_cosine(self, a, b, value):
        self._cosines[(a, b)].update_state(value)

    def update_state(self, name, value, batch_size):
        self._means[name].update_state(value, sample_weight=batch_size)

    @property
    def reports_weights(self):
        return bool(self._weights)

    def update_weight(self, name, value):
        if self.training and name in self._weights:
            self._weights[name].update_state(value)

    def reset_state(self):
        for mean in self._means.values():
            mean.reset_state()

    def result(self):
        results = {
            mean.name: mean.result()
            for name, mean in self._means.items()
            if name in self.active
        }
        if not self.training:
            return results
        for name, weight in self._weights.items():
            if name in self.active:
                results[weight.name] = weight.result()
        for (a, b), cosine in self._cosines.items():
            if a in self.active and b in self.active:
                results[cosine.name] = cosine.result()
        return results


class StepValues(threading.local):
    """What one step's loss computation leaves for the rest of the step.

    One set per thread: `tf.distribute` traces each replica's step in its
    own thread, and switches threads at every cross-replica call, so values
    kept on a shared object would mix replicas.
    """

    def __init__(self):
        self.routed_losses, self.task_indices = {}, []
        self.task_losses = self.task_weights = self.task_raw_losses = None
        self.extra_loss = None
        self.loss_groups, self.unreached = {}, frozenset()

    def __reduce__(self):
        return (type(self), ())


class SubmodelLosses(keras.losses.Loss):
    """Per-submodel and joint losses ("tasks"), weighted by a strategy.

    Each task is tracked as `{name}_loss` (unweighted). Calling it returns
    the weighted sum of the tasks that update every variable they reach,
    plus the strategy's extra term (`None` if there is nothing). After each
    call:

    - `routed_losses`: the weighted joint losses with `updates`, summed per
      set of updated submodels, keyed by a tuple of submodel names.
    - `task_indices`, `task_losses`: positions (in `task_names`) and
      weighted values (a tensor) of the tasks that had a loss.
    - `extra_loss`: the strategy's extra term, or `None`.

    Args:
        losses: Dict mapping submodel name to a Keras loss identifier (as
            accepted by `keras.Model.compile(loss=...)`), or `None`.
        joint_losses: List of `JointLoss`, called on the targets as given
            and the dict of all outputs.
        weighting: A built `jk.weighting.Weighting` over `task_names`.
        missing_label: `None` or `"nan"`: see `mask_unlabelled_rows`.
    """

    def __init__(self, losses, joint_losses, weighting, missing_label=None):
        super().__init__(name="joint_loss")
        self.missing_label = missing_label
        self.names = list(losses)
        self._losses = {
            name: CompileLoss(loss) for name, loss in losses.items() if loss is not None
        }
        self.joint_losses = list(joint_losses)
        self.task_names = task_names(losses, joint_losses)
        self.weighting = weighting
        self.training = True
        self._step = StepValues()
        self._updates = {term.name: term.updates for term in self.joint_losses}
        self._trackers = LossTrackers(
            self.task_names,
            report_weights=type(weighting).__name__ != "Fixed",
            report_cosines=weighting.gradient_level,
        )

    routed_losses = property(lambda self: self._step.routed_losses)
    task_indices = property(lambda self: self._step.task_indices)
    task_losses = property(lambda self: self._step.task_losses)
    task_weights = property(lambda self: self._step.task_weights)
    task_raw_losses = property(lambda self: self._step.task_raw_losses)
    extra_loss = property(lambda self: self._step.extra_loss)

    @property
    def built(self):
        # While False, Keras builds the losses symbolically before tracing
        # the first step of `fit()`/`evaluate()`.
        return all(loss.built for loss in self._losses.values())

    @property
    def metrics(self):
        return [self._trackers]

    @property
    def variables(self):
        return self._trackers.variables

    def __call__(self, y_true, y_pred, sample_weight=None):
        return self.call(y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred, sample_weight=None):
        values = self._task_values(y_true, y_pred, sample_weight)
        indices = [k for k, name in enumerate(self.task_names) if name in values]
        self._trackers.active = tuple(self.task_names[k] for k in indices)
        self._trackers.training = self.training
        step = self._step
        step.routed_losses, step.task_indices = {}, indices
        step.task_losses, step.extra_loss = None, None
        if not indices:
            return None
        losses = ops.stack([values[self.task_names[k]] for k in indices])
        # What the strategy reads: the losses of the global batch (each
        # replica's are scaled by `1 / num_replicas` under `tf.distribute`).
        global_losses = backend.cross_replica_sum(ops.stop_gradient(losses))
        weights = self.weighting.task_weights(global_losses, indices, self.training)
        weighted = losses * weights
        step.task_losses, step.task_weights = weighted, weights
        step.task_raw_losses = global_losses
        if self._trackers.reports_weights and self.training:
            for i, k in enumerate(indices):
                self._trackers.update_weight(self.task_names[k], weights[i])
        names = [self.task_names[k] for k in indices]
        if all(self._updates.get(name) is None for name in names):
            total = ops.sum(weighted)
        else:
            total = None
            for i, name in enumerate(names):
                updates = self._updates.get(name)
                if updates is None:
                    total = weighted[i] if total is None else total + weighted[i]
                    continue
                key = tuple(n for n in self.names if n in updates)
                previous = step.routed_losses.get(key)
                step.routed_losses[key] = (
                    weighted[i] if previous is None else previous + weighted[i]
                )
        extra = self.weighting.extra_loss(indices)
        if extra is not None:
            # Added once per replica: scaled like the losses.
            step.extra_loss = scale_loss_for_distribution(extra)
            total = step.extra_loss if total is None else total + step.extra_loss
        return total

    def record_coefficients(self, a):
        """Logs `{task}_weight` as the task weight times the strategy's
        gradient coefficient `a` (gradient-level strategies)."""
        for i, k in enumerate(self.task_indices):
            self._trackers.update_weight(
                self.task_names[k], self.task_weights[i] * a[i]
            )

    def record_cosines(self, gram):
        """Logs `grad_cos_{a}_{b}` from the Gram matrix of the active tasks'
        gradients (rows in `task_indices` order)."""
        cosines = cosine_matrix(gram)
        names = [self.task_names[k] for k in self.task_indices]
        for i, a in enumerate(names):
            for j in range(i + 1, len(names)):
                self._trackers.update_cosine(a, names[j], cosines[i, j])

    def _task_values(self, y_true, y_pred, sample_weight):
        """Dict task name -> unweighted loss, for the tasks with a loss."""
        targets = split_by_submodel(y_true, self.names, "y")
        sample_weights = split_by_submodel(sample_weight, self.names, "sample_weight")
        values = {}
        for name in self._losses:
            if name not in targets:
                continue
            target, prediction = mask_unlabelled_rows(
                targets[name], y_pred[name], self.missing_label
            )
            value = self._losses[name](target, prediction, sample_weights.get(name))
            self._trackers.update_state(
                name, unscale_loss_for_distribution(value), _batch_size(y_pred[name])
            )
            values[name] = value
        for term in self.joint_losses:
            value = ops.cast(term(y_true, y_pred), self.dtype)
            self._trackers.update_state(term.name, value, _batch_size(y_pred))
            # Like Keras losses, scaled per replica under `tf.distribute`.
            values[term.name] = scale_loss_for_distribution(value)
        return values


def cosine_matrix(gram):
    """Pairwise cosines of the vectors whose Gram matrix is `gram`."""
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
    return ops.divide_no_nan(gram, ops.outer(norms, norms))


def task_names(losses, joint_losses):
    """Submodels with a loss, in order, then the joint losses."""
    return [n for n, loss in losses.items() if loss is not None] + [
        term.name for term in joint_losses
    ]


class SubmodelMetrics(MetricsList):
    """Keras `CompileMetrics` per submodel, logged as `{name}_{metric}`.

    A submodel's metrics are built the first time it has targets (Keras
    builds them symbolically before the first step of `fit()`/`evaluate()`
    while `built` is False), and reported only while it has targets.

    Args:
        metrics: Dict mapping submodel name to metrics as accepted by
            `keras.Model.compile(metrics=...)` for a single model, or `None`.
        weighted_metrics: Same, for metrics weighted by `sample_weight`.
        missing_label: `None` or `"nan"`: see `mask_unlabelled_rows`.
    """

    def __init__(self, metrics, weighted_metrics, missing_label=None):
        # `MetricsList.__init__` would set `metrics`, a property here.
        keras.metrics.Metric.__init__(self, name="compile_metrics")
        self.missing_label = missing_label
        self.names = list(metrics)
        self._per_submodel = {}
        for name in self.names:
            m, wm = metrics[name], weighted_metrics[name]
            if m or wm:
                self._per_submodel[name] = CompileMetrics(
                    _as_list(m), _as_list(wm), name=f"{name}_metrics"
                )
        self.active = tuple(self._per_submodel)

    @property
    def built(self):
        return all(cm.built for cm in self._per_submodel.values())

    @built.setter
    def built(self, value):
        # `keras.metrics.Metric.__init__` sets it; the property derives it.
        pass

    @property
    def metrics(self):
        return [m for cm in self._per_submodel.values() if cm.built for m in cm.metrics]

    @property
    def variables(self):
        return [v for cm in self._per_submodel.values() for v in cm.variables]

    def update_state(self, y_true, y_pred, sample_weight=None):
        targets = split_by_submodel(y_true, self.names, "y")
        sample_weights = split_by_submodel(sample_weight, self.names, "sample_weight")
        active = [name for name in self._per_submodel if name in targets]
        self.active = tuple(active)
        for name in active:
            target, prediction = mask_unlabelled_rows(
                targets[name], y_pred[name], self.missing_label
            )
            compile_metrics = self._per_submodel[name]
            if not compile_metrics.built:
                compile_metrics.build(target, prediction)
                # Name each metric as it is logged, `{name}_{metric}`.
                for metric in compile_metrics.metrics:
                    metric.name = f"{name}_{metric.name}"
            compile_metrics.update_state(target, prediction, sample_weights.get(name))

    def reset_state(self):
        for compile_metrics in self._per_submodel.values():
            compile_metrics.reset_state()

    def result(self):
        results = {}
        for name in self.active:
            results.update(self._per_submodel[name].result())
        return results


def _as_list(metrics):
    if metrics is None or isinstance(metrics, (list, tuple, dict)):
        return metrics
    return [metrics]
