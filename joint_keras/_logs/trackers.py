"""The metrics behind a joint model's loss logs."""

import keras
from keras import ops

from joint_keras import _compat


def cosine_pair_name(a, b):
    """Log name of the gradient cosine of tasks `a` and `b`. Unambiguous:
    `grad_cos_{a}_{b}` could read as two splits of `a_b_c`."""
    return f"grad_cos/{a}/{b}"


class LastValue(keras.metrics.Metric):
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


class TotalLoss(keras.metrics.Metric):
    """The `loss` log: the weighted total, averaged as its parts are.

    Each task's weighted loss is averaged over the rows that had a label
    for it (a batch with none adds nothing), everything else (regularization,
    strategy terms) over all rows, and the parts are summed. Without missing
    labels this is Keras's mean of the batch totals weighted by batch size.

    Args:
        num_tasks: Number of tasks.
    """

    def __init__(self, num_tasks, name="loss"):
        super().__init__(name=name)
        _compat.set_direction(self, "down")

        def state(name, shape):
            return self.add_variable(shape=shape, initializer="zeros", name=name)

        self.task_sums = state("task_sums", (num_tasks,))
        self.task_rows = state("task_rows", (num_tasks,))
        self.rest_sum = state("rest_sum", ())
        self.rest_rows = state("rest_rows", ())

    def update_state(self, losses, batch_rows):
        """Adds one batch.

        Args:
            losses: The step's `StepLosses`.
            batch_rows: Scalar tensor, the batch size.
        """
        if losses.labelled is None:
            # Every row labelled: the batch total, weighted by the batch
            # size, as Keras's `loss` tracker does.
            rest = losses.total if losses.indices else losses.others
        else:
            rest = losses.others
            selection = ops.one_hot(
                ops.array(losses.indices), self.task_sums.shape[0], dtype="float32"
            )
            rows = ops.cast(losses.labelled, "float32")
            weighted = _compat.unscale_loss_for_distribution(losses.tasks)
            self.task_sums.assign_add(
                ops.matmul(ops.cast(weighted, "float32") * rows, selection)
            )
            self.task_rows.assign_add(ops.matmul(rows, selection))
        if rest is not None:
            rest = _compat.unscale_loss_for_distribution(rest)
            self.rest_sum.assign_add(ops.cast(rest, "float32") * batch_rows)
            self.rest_rows.assign_add(batch_rows)

    def result(self):
        tasks = ops.sum(ops.divide_no_nan(self.task_sums, self.task_rows))
        return tasks + ops.divide_no_nan(self.rest_sum, self.rest_rows)


class LossTrackers(_compat.MetricsList):
    """One `Mean` per task loss, logged as `{name}_loss`; with
    `report_weights` the current weight of each task, `{name}_weight`; with
    `report_cosines` the cosine of each pair of tasks' gradients.

    Only the tasks that had a loss in the step being traced are reported,
    so a submodel trained without targets does not log a stale or zero
    loss. Being a Keras `MetricsList` of metrics named as logged, with
    their direction, lets callbacks monitor `val_{name}_loss` in
    `mode="auto"`.

    Args:
        names: Task names.
        report_weights: Bool.
        report_cosines: Bool.
    """

    def __init__(self, names, report_weights=False, report_cosines=False):
        self.means = {name: keras.metrics.Mean(name=f"{name}_loss") for name in names}
        for mean in self.means.values():
            _compat.set_direction(mean, "down")
        self.weights = {}
        if report_weights:
            self.weights = {name: LastValue(f"{name}_weight") for name in names}
        self.cosines = {}
        if report_cosines:
            self.cosines = {
                (a, b): LastValue(cosine_pair_name(a, b))
                for i, a in enumerate(names)
                for b in names[i + 1 :]
            }
        # Per-output losses of multi-output submodels, added when built.
        self.outputs = {}
        super().__init__(self._all(), name="task_losses")
        self.active = tuple(names)
        # Weights and gradient cosines describe training steps only.
        self.training = True

    def _all(self):
        return (
            list(self.means.values())
            + [m for ms in self.outputs.values() for m in ms]
            + list(self.weights.values())
            + list(self.cosines.values())
        )

    def add_output_trackers(self, name, trackers):
        """Lists a multi-output submodel's per-output `Mean`s, renamed
        `{name}_{output}_loss`."""
        for tracker in trackers:
            tracker.name = f"{name}_{tracker.name}"
            _compat.set_direction(tracker, "down")
        self.outputs[name] = list(trackers)
        self.metrics = self._all()

    @property
    def variables(self):
        return [v for m in self._all() for v in m.variables]

    def update_loss(self, name, value, rows):
        self.means[name].update_state(value, sample_weight=rows)

    def update_weights(self, names, values, track=None):
        if self.training and self.weights:
            for i, name in enumerate(names):
                if track is None or name in track:
                    self.weights[name].update_state(values[i])

    def update_cosines(self, names, cosines):
        for i, a in enumerate(names):
            for j in range(i + 1, len(names)):
                self.cosines[(a, names[j])].update_state(cosines[i, j])

    def reset_state(self):
        for mean in self.means.values():
            mean.reset_state()
        for trackers in self.outputs.values():
            for tracker in trackers:
                tracker.reset_state()

    def result(self):
        results = {}
        for name in self.active:
            results[self.means[name].name] = self.means[name].result()
            for tracker in self.outputs.get(name, []):
                results[tracker.name] = tracker.result()
        if not self.training:
            return results
        for name, weight in self.weights.items():
            if name in self.active:
                results[weight.name] = weight.result()
        for (a, b), cosine in self.cosines.items():
            if a in self.active and b in self.active:
                results[cosine.name] = cosine.result()
        return results
