"""Every use of private Keras in `joint_keras`, each behind a named function.

Keras exports no public route for what is here. Each entry says why it is
needed; all were checked on Keras 3.15.1 and on the 3.16 pre-release
`keras-nightly==3.16.0.dev2026102704` (`make test-keras-next`). A test
(`tests/test_package_source.py`) fails if any other module of the package
imports `keras.src` or reads an underscore attribute of a Keras object, so a
Keras release that moves one of these breaks this file only.
"""

import re

import keras
from keras.src.backend.common import masking
from keras.src.losses import loss as loss_module
from keras.src.trainers import compile_utils
from keras.src.utils import tracking

KERAS_VERSION = tuple(int(part) for part in re.findall(r"\d+", keras.version())[:2])

# Keras 3.15 and the 3.16 pre-release cannot `fit()` under TensorFlow's
# `MultiWorkerMirroredStrategy` (keras-team/keras#20585: the batch used for
# the symbolic build is reduced with `axis=None`, and scalar logs are reduced
# with `axis=0`). Our work-arounds apply to the versions checked; a later
# release is left alone (and `tests/test_distributed.py` tells).
KERAS_20585_UNFIXED = KERAS_VERSION < (3, 17)

MetricsList = compile_utils.MetricsList
"""Base class of our loss-tracker container. Callbacks in `mode="auto"`
(`EarlyStopping`, `ModelCheckpoint`, ...) look for a monitored metric's
direction only inside `MetricsList` and `CompileMetrics` instances."""


def compile_loss(loss, loss_weights=None, output_names=None):
    """Keras's `CompileLoss` for one submodel: its `loss` means what it means
    in `keras.Model.compile` (string resolution by shape, nested outputs,
    per-output weights, sample weights, distribution scaling); a loss dict
    of a model that returns a list is keyed by `output_names`."""
    return compile_utils.CompileLoss(
        loss, loss_weights=loss_weights, output_names=output_names
    )


def compile_metrics(metrics, weighted_metrics):
    """Keras's `CompileMetrics` for one submodel (`"accuracy"` resolved by
    shape, nested outputs, weighted metrics), as in `keras.Model.compile`."""
    return compile_utils.CompileMetrics(metrics, weighted_metrics)


def set_direction(metric, direction):
    """Tells callbacks in `mode="auto"` whether `metric` should go `"up"` or
    `"down"`: Keras reads the private `_direction` of each metric."""
    metric._direction = direction


def set_keras_mask(tensor, mask):
    """Attaches a row mask to predictions. Keras losses and metrics read it,
    average over the unmasked rows only, and give 0 when there are none."""
    masking.set_keras_mask(tensor, mask)


def scale_loss_for_distribution(loss):
    """Divides a loss by the number of replicas under `tf.distribute` (as
    Keras's loss containers do), so that summed replica gradients are the
    global batch's. The identity elsewhere."""
    return loss_module.scale_loss_for_distribution(loss)


def unscale_loss_for_distribution(loss):
    """Undoes `scale_loss_for_distribution`, for logging."""
    return loss_module.unscale_loss_for_distribution(loss)


def attach_containers(model, loss, metrics):
    """Puts our containers where Keras's trainer looks for its own.

    Keras's `_symbolic_build` builds `_compile_loss` and `_compile_metrics`
    (lazily, from the first batch's shapes) before any step is traced, so
    their variables exist before `tf.function`/`jax.jit`; `model.metrics`
    (and so `metrics_variables`, `reset_metrics` and the logs) lists
    `_loss_tracker` (here `loss.total_tracker`, the `loss` log),
    `_compile_metrics` and `_compile_loss.metrics`. Set, as Keras's own
    `compile()` sets them, without tracking (else they would also be listed
    among the model's own metrics: their variables twice in a JAX state,
    which JAX refuses to donate twice).
    """
    with tracking.DotNotTrackScope():
        model._compile_loss = loss
        model._compile_metrics = metrics
        model._loss_tracker = loss.total_tracker


def untrack(model, obj):
    """Removes a tracked layer or seed generator from `model`, and so its
    variables from the model's. Keras's `__delattr__` does not untrack them:
    a weighting strategy or a joint loss's seed generator replaced by a
    second `compile()` would otherwise stay in the model's variables."""
    model._tracker.untrack(obj)
    if any(item is obj for item in model._layers):
        model._layers.remove(obj)


class TrainerFixes:
    """Mixin that works around keras-team/keras#20585 on the versions checked.

    TensorFlow only: Keras builds losses and metrics under a strategy from
    the mean of a distributed batch over replicas, which fails under
    `MultiWorkerMirroredStrategy`; only shapes matter, so build from this
    worker's first replica's batch.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if (
            KERAS_20585_UNFIXED
            and keras.backend.backend() == "tensorflow"
            and iterator is not None
            and self._distribute_strategy is not None
        ):
            iterator, data_batch = None, _first_replica_batch(iterator)
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def _first_replica_batch(iterator):
    import tensorflow as tf

    for _, _, it in iterator:
        batch = next(it)
        return keras.tree.map_structure(
            lambda v: (
                v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
            ),
            batch,
        )
    return None


def multi_worker_step_logs(logs):
    """TensorFlow, keras-team/keras#20585: under `MultiWorkerMirroredStrategy`
    Keras averages the step's logs over replicas with
    `strategy.reduce("MEAN", v, axis=0)`, which needs an axis 0: give scalar
    logs one. TensorFlow's own check for multi-worker mode is private."""
    if not KERAS_20585_UNFIXED:
        return logs
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    multi_worker = (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )
    if not multi_worker:
        return logs
    return keras.tree.map_structure(
        lambda v: tf.reshape(v, (1,)) if v.shape.rank == 0 else v, logs
    )


class AtomicBackupMetadata:
    """Mixin for `keras.callbacks.BackupAndRestore` that writes its small
    training-metadata file (epoch, batch) atomically, as `JointModel` writes
    its weights: Keras writes it in place, so a process killed during that
    write leaves a file that stops the next run with a `JSONDecodeError`.
    Overrides the callback's private `_save_model`."""

    def _save_model(self):
        import json
        import os

        from joint_keras._saving import saving as _saving

        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint and os.path.exists(self._weights_path):
            _saving.atomic_copy(self._weights_path, self._prev_weights_path)
        if self.double_checkpoint and os.path.exists(self._training_metadata_path):
            _saving.atomic_copy(
                self._training_metadata_path, self._prev_training_metadata_path
            )
        self.model.save_weights(filepath=self._weights_path, overwrite=True)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}

        def write(path):
            with open(path, "w") as f:
                f.write(json.dumps(metadata))

        _saving.atomic_write(self._training_metadata_path, True, write)
