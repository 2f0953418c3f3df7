"""`SubmodelMetrics`: Keras's metrics per submodel, logged `{name}_{metric}`."""

import keras
from keras import tree

from joint_keras import _compat
from joint_keras._step import targets as _targets


class SubmodelMetrics(_compat.MetricsList):
    """Keras `CompileMetrics` per submodel output, logged `{name}_{metric}`
    (`{name}_{output}_{metric}` for a submodel with several outputs).

    A submodel's metrics are built the first time it has targets (Keras
    builds them symbolically before the first step of `fit()`/`evaluate()`
    while `built` is False), and reported only while it has targets.

    Args:
        spec: The `CompileSpec`.
    """

    @staticmethod
    def wanted(spec):
        """Whether `spec` asks for any metric."""
        return any(spec.metrics.values()) or any(spec.weighted_metrics.values())

    def __init__(self, spec):
        # `MetricsList.__init__` would set `metrics`, a property here.
        keras.metrics.Metric.__init__(self, name="compile_metrics")
        self.spec = spec
        self.wanted = [
            name
            for name in spec.names
            if spec.metrics[name] or spec.weighted_metrics[name]
        ]
        # name -> list of (output path or None, CompileMetrics), once built.
        self.per_submodel = {}
        self.active = ()

    @property
    def built(self):
        return all(name in self.per_submodel for name in self.wanted)

    @built.setter
    def built(self, value):
        # `keras.metrics.Metric.__init__` sets it; the property derives it.
        pass

    @property
    def metrics(self):
        return [
            m
            for outputs in self.per_submodel.values()
            for _, cm in outputs
            for m in cm.metrics
        ]

    @property
    def variables(self):
        return [
            v
            for outputs in self.per_submodel.values()
            for _, cm in outputs
            for v in cm.variables
        ]

    def update_state(self, y_true, y_pred, sample_weight=None):
        names = list(self.spec.names)
        joint_names = [term.name for term in self.spec.joint_losses]
        targets = _targets.split(y_true, names, "y")
        sample_weights = _targets.split(
            sample_weight, names, "sample_weight", extra_keys=joint_names
        )
        self.active = tuple(name for name in self.wanted if name in targets)
        for name in self.active:
            target, prediction, _ = _targets.mask_unlabelled_rows(
                targets[name], y_pred[name], self.spec.missing_label
            )
            if name not in self.per_submodel:
                self.per_submodel[name] = self._build(
                    name, _like(target, prediction), prediction
                )
            weight = sample_weights.get(name)
            target = _like(target, prediction)
            weight = _like(weight, prediction)
            for path, compile_metrics in self.per_submodel[name]:
                if path is None:
                    compile_metrics.update_state(target, prediction, weight)
                else:
                    compile_metrics.update_state(
                        _at(target, path),
                        _at(prediction, path),
                        _at(weight, path) if tree.is_nested(weight) else weight,
                    )

    def _build(self, name, target, prediction):
        """One `CompileMetrics` for a submodel, or one per output when it
        has several, each metric named as logged, so that callbacks in
        `mode="auto"` find it and its direction."""
        metrics = self.spec.metrics[name]
        weighted = self.spec.weighted_metrics[name]
        if not tree.is_nested(prediction):
            return [(None, _built(metrics, weighted, target, prediction, name))]
        built = []
        for i, (path, leaf) in enumerate(_output_paths(prediction)):
            label = "_".join(str(p) for p in path)
            built.append(
                (
                    path,
                    _built(
                        _for_output(metrics, path, i),
                        _for_output(weighted, path, i),
                        _at(target, path),
                        leaf,
                        f"{name}_{label}",
                    ),
                )
            )
        return built

    def reset_state(self):
        for outputs in self.per_submodel.values():
            for _, compile_metrics in outputs:
                compile_metrics.reset_state()

    def result(self):
        results = {}
        for name in self.active:
            for _, compile_metrics in self.per_submodel.get(name, []):
                results.update(compile_metrics.result())
        return results


def _built(metrics, weighted, target, prediction, prefix):
    compile_metrics = _compat.compile_metrics(_as_list(metrics), _as_list(weighted))
    compile_metrics.build(target, prediction)
    for metric in compile_metrics.metrics:
        metric.name = f"{prefix}_{metric.name}"
    return compile_metrics


def _output_paths(prediction):
    """`(path, tensor)` for each output of a nested prediction."""
    if isinstance(prediction, dict):
        return [
            ((key,) + sub, leaf)
            for key, value in prediction.items()
            for sub, leaf in _output_paths(value)
        ]
    if isinstance(prediction, (list, tuple)):
        return [
            ((i,) + sub, leaf)
            for i, value in enumerate(prediction)
            for sub, leaf in _output_paths(value)
        ]
    return [((), prediction)]


def _at(structure, path):
    for key in path:
        structure = structure[key]
    return structure


def _like(target, prediction):
    """A multi-output submodel's targets in the structure of its outputs (a
    list of targets for dict outputs is in the outputs' order)."""
    if isinstance(prediction, dict) and isinstance(target, (list, tuple)):
        return dict(zip(prediction, target))
    return target


def _for_output(metrics, path, index):
    """A multi-output submodel's metrics for one output: a dict is keyed
    by output name, a list of lists is in output order, and anything else
    applies to every output."""
    if isinstance(metrics, dict):
        return metrics.get(path[0])
    if (
        isinstance(metrics, (list, tuple))
        and metrics
        and all(isinstance(m, (list, tuple)) or m is None for m in metrics)
    ):
        return metrics[index]
    return metrics


def _as_list(metrics):
    if metrics is None or isinstance(metrics, (list, tuple, dict)):
        return metrics
    return [metrics]
