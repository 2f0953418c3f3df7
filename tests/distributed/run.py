"""Trains every case of `cases.py` in one distribution mode, saves results.

Usage: python -m tests.distributed.run MODE OUT.npz

Modes (each needs its own process: devices are set up before the backend
starts):

- `single`: one device, any backend.
- `tf-mirrored`: TensorFlow `MirroredStrategy` over two logical CPUs.
- `tf-worker`: one worker of a `MultiWorkerMirroredStrategy` (`TF_CONFIG`
  set by the caller); each worker reads its own shard of every global
  batch.
- `jax-data-parallel`: JAX, `keras.distribution.DataParallel` over two
  host devices.
- `jax-model-parallel`: JAX, `keras.distribution.ModelParallel` on a
  `(batch=1, model=2)` mesh, the shared trunk's kernel split over `model`.
- `jax-process`: one of two JAX processes (`JK_COORDINATOR` and
  `JK_PROCESS_ID` set by the caller) joined by
  `keras.distribution.initialize`, one CPU device each, CPU collectives
  over gloo, `DataParallel` over both; each process feeds its rows of every
  global batch.
"""

import os
import sys

MODE = sys.argv[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if MODE == "jax-process":
    os.environ["KERAS_BACKEND"] = "jax"
elif MODE.startswith("jax"):
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
elif MODE.startswith("tf"):
    os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tests.distributed import cases  # noqa: E402


def tf_two_cpus():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )


def worker_shards(strategy):
    """Distributed dataset: each worker gets its rows of every global batch
    (the same rows the one-device run has in that batch)."""
    import tensorflow as tf

    x, y = cases.data()

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(cases.GLOBAL_BATCH)
        rows = shard_rows(context.input_pipeline_id, context.num_input_pipelines)
        shard = (x[rows], {k: v[rows] for k, v in y.items()})
        return tf.data.Dataset.from_tensor_slices(shard).batch(per_replica).repeat()

    return dict(
        x=strategy.distribute_datasets_from_function(dataset_fn),
        steps_per_epoch=cases.STEPS_PER_EPOCH,
    )


def shard_rows(index, shards):
    """The rows shard `index` of `shards` holds of every global batch (the
    rows the one-device run has in that batch), in batch order."""
    per_shard = cases.GLOBAL_BATCH // shards
    start = index * per_shard
    return np.concatenate(
        [
            np.arange(s, s + per_shard) + start
            for s in range(0, cases.NUM_ROWS, cases.GLOBAL_BATCH)
        ]
    )


def process_shards():
    """`fit()` arguments for this JAX process: its rows, in batches of its
    part of the global batch."""
    x, y = cases.data()
    rows = shard_rows(int(os.environ["JK_PROCESS_ID"]), 2)
    return dict(
        x=x[rows],
        y={k: v[rows] for k, v in y.items()},
        batch_size=cases.GLOBAL_BATCH // 2,
        shuffle=False,
    )


def main(out):
    results = {}
    for case in cases.CASES:
        keras.backend.clear_session()
        fit_data, scope = None, None
        if MODE == "tf-mirrored":
            scope = STRATEGY
        elif MODE == "tf-worker":
            scope = STRATEGY
            fit_data = worker_shards(scope)
        elif MODE == "jax-data-parallel":
            keras.distribution.set_distribution(keras.distribution.DataParallel())
        elif MODE == "jax-process":
            distribution = keras.distribution.DataParallel()
            distribution.auto_shard_dataset = False  # each process its rows
            keras.distribution.set_distribution(distribution)
            fit_data = process_shards()
        elif MODE == "jax-model-parallel":
            mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"])
            layouts = keras.distribution.LayoutMap(mesh)
            layouts["trunk.*kernel"] = (None, "model")
            keras.distribution.set_distribution(
                keras.distribution.ModelParallel(
                    layout_map=layouts, batch_dim_name="batch"
                )
            )
        try:
            if scope is not None:
                with scope.scope():
                    initial, weights, logs = cases.train(case, fit_data)
            else:
                initial, weights, logs = cases.train(case, fit_data)
        except Exception as error:  # reported per case, checked by the test
            results[f"{case}/error"] = np.array(f"{type(error).__name__}: {error}")
            continue
        results[f"{case}/initial0"] = initial[0]
        for i, w in enumerate(weights):
            results[f"{case}/weight{i}"] = w
        for key, value in logs.items():
            results[f"{case}/log/{key}"] = np.array(value)
    results["devices"] = np.array(devices(scope))
    np.savez(out, **results)


def devices(scope):
    if scope is not None:
        return scope.num_replicas_in_sync
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    return int(np.prod(distribution.device_mesh.shape))


if __name__ == "__main__":
    # One strategy for all cases: collective ops of a second strategy in
    # the same process could reuse the first one's instance keys.
    if MODE == "tf-mirrored":
        import tensorflow as tf

        tf_two_cpus()
        STRATEGY = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
    if MODE == "tf-worker":
        import tensorflow as tf

        STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
    if MODE == "jax-process":
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        keras.distribution.initialize(
            os.environ["JK_COORDINATOR"], 2, int(os.environ["JK_PROCESS_ID"])
        )
    main(sys.argv[2])
