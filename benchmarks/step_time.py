"""Steps per second and peak memory of `JointModel.fit` against baselines.

```
python -m benchmarks.step_time [--sizes small large] [--repeats 5]
                               [--backends ...] [--steps-scale 1.0]
                               [--no-memory]
```

Two models trained jointly on the sum of their weighted MSE losses, the
usual hand-written `GradientTape` set-up: `small` is a pair of MLPs (inputs
10, hidden 64 and 32, batch 32), `large` a pair with inputs 256, hidden
1024 and 1024, batch 256. Adam.
Contenders, on the same models, data and step count:

- `hand eager`: the hand-written loop (`GradientTape` / `jax.value_and_grad`
  / `loss.backward()`), run op by op.
- `hand compiled`: the same step under `tf.function` / `jax.jit`; PyTorch's
  hand loop is eager only (its compiled form is `torch.compile`, not
  timed here).
- `functional`: one Keras functional model with two outputs, `loss_weights`,
  `fit()` with `steps_per_execution` 1 and 32.
- `joint`: `jk.JointModel` of the two models, same `compile()` arguments,
  `fit()` with `steps_per_execution` 1 and 32.

All contenders of one backend and size are timed in one process,
interleaved (run 1 of each, then run 2 of each, ...), so that a slow spell
of the machine hits them all; each figure is the median of `--repeats`
runs, after a warm-up run that compiles, and each run is one call (one
epoch of `fit()`), so `fit()`'s per-call set-up is included. Peak memory
comes from a separate process per (backend, size, contender), so that it is
that contender's own: the peak resident memory growth over the process's
memory once Keras and the backend are loaded.
"""

import argparse
import json
import os
import resource
import statistics

from benchmarks._timing import fit_runner
from benchmarks._timing import median_seconds

SIZES = {
    # inputs, hidden of model 1, hidden of model 2, batch, steps per run
    "small": (10, 64, 32, 32, 1024),
    "large": (256, 1024, 1024, 256, 128),
}
CONTENDERS = ("hand eager", "hand compiled", "functional", "joint")
EAGER_STEPS = 64  # eager loops are slow: fewer steps, same steps/s
WEIGHTS = (0.7, 0.3)


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _data(size, steps):
    import numpy as np

    inputs, _, _, batch, _ = SIZES[size]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * steps, inputs)).astype("float32")
    y = rng.normal(size=(batch * steps, 1)).astype("float32")
    return x, y


def _models(size):
    import keras

    inputs, h1, h2, _, _ = SIZES[size]
    keras.utils.set_random_seed(0)
    return [
        keras.Sequential(
            [
                keras.Input((inputs,)),
                keras.layers.Dense(hidden, activation="relu"),
                keras.layers.Dense(1),
            ],
            name=name,
        )
        for name, hidden in (("model1", h1), ("model2", h2))
    ]


def _fit_runner(contender, size, steps, steps_per_execution):
    import keras

    import joint_keras as jk

    m1, m2 = _models(size)
    batch = SIZES[size][3]
    if contender == "functional":
        inputs = keras.Input(m1.inputs[0].shape[1:])
        model = keras.Model(inputs, {"model1": m1(inputs), "model2": m2(inputs)})
    else:
        model = jk.JointModel({"model1": m1, "model2": m2})
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={"model1": "mse", "model2": "mse"},
        loss_weights={"model1": WEIGHTS[0], "model2": WEIGHTS[1]},
        steps_per_execution=steps_per_execution,
    )
    x, y = _data(size, steps)
    return fit_runner(model, x, {"model1": y, "model2": y}, batch, steps)


def _hand_runner(compiled, size, steps):
    """The hand-written loop (one optimizer over both models' variables), on
    this backend."""
    import keras
    from keras import ops

    models = _models(size)
    optimizer = keras.optimizers.Adam(1e-3)
    variables = [v for m in models for v in m.trainable_variables]
    optimizer.build(variables)
    x, y = _data(size, steps)
    batch = SIZES[size][3]
    batches = [
        (
            ops.convert_to_tensor(x[i : i + batch]),
            ops.convert_to_tensor(y[i : i + batch]),
        )
        for i in range(0, len(x), batch)
    ]

    def total_loss(outputs, yb):
        return sum(
            w * ops.mean(ops.square(yb - out)) for w, out in zip(WEIGHTS, outputs)
        )

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = total_loss([m(xb) for m in models], yb)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables))
            return loss

        if compiled:
            step = tf.function(step)

        def run(n=steps):
            for xb, yb in batches[:n]:
                step(xb, yb)
            float(step(*batches[0]))  # waits for the device

    elif backend == "jax":
        import jax

        def loss_fn(trainable, xb, yb):
            outputs, k = [], 0
            for m in models:
                count = len(m.trainable_variables)
                out, _ = m.stateless_call(trainable[k : k + count], [], xb)
                outputs.append(out)
                k += count
            return total_loss(outputs, yb)

        def step(trainable, optimizer_vars, xb, yb):
            loss, grads = jax.value_and_grad(loss_fn)(trainable, xb, yb)
            trainable, optimizer_vars = optimizer.stateless_apply(
                optimizer_vars, grads, trainable
            )
            return loss, trainable, optimizer_vars

        if compiled:
            step = jax.jit(step)
        state = {
            "trainable": [v.value for v in variables],
            "optimizer": [v.value for v in optimizer.variables],
        }

        def run(n=steps):
            loss = None
            for xb, yb in batches[:n]:
                loss, state["trainable"], state["optimizer"] = step(
                    state["trainable"], state["optimizer"], xb, yb
                )
            loss.block_until_ready()

    elif backend == "torch":
        import torch

        if compiled:
            return None

        def run(n=steps):
            for xb, yb in batches[:n]:
                loss = total_loss([m(xb) for m in models], yb)
                for v in variables:
                    v.value.grad = None
                loss.backward()
                with torch.no_grad():
                    optimizer.apply([v.value.grad for v in variables], variables)

    else:
        raise NotImplementedError(backend)
    return run


def _runners(size, contenders, steps):
    """`{(contender, steps_per_execution): (run, steps)}`, each warmed up."""
    import keras

    runners = {}
    for contender in contenders:
        if contender.startswith("hand"):
            compiled = contender == "hand compiled"
            n = steps if compiled else min(steps, EAGER_STEPS)
            run = _hand_runner(compiled, size, n)
            if run is not None:
                runners[(contender, "1")] = (run, n)
        else:
            # PyTorch's trainer runs one step per call.
            torch = keras.backend.backend() == "torch"
            for spe in (1,) if torch else (1, 32):
                run = _fit_runner(contender, size, steps, spe)
                runners[(contender, str(spe))] = (run, steps)
    for run, _ in runners.values():
        run(64)  # warm-up: traces and compiles
    return runners


def worker(size, contender, repeats, steps_scale):
    """Times all contenders in this process, interleaved (contender="all"),
    or measures one contender's peak memory."""
    import keras

    import joint_keras  # noqa: F401  (the libraries' own memory is not counted)

    keras.ops.convert_to_numpy(keras.ops.ones((2, 2)) @ keras.ops.ones((2, 2)))
    steps = max(32, int(SIZES[size][4] * steps_scale) // 32 * 32)
    if contender != "all":
        start_rss = _rss_mb()
        for run, _ in _runners(size, [contender], steps).values():
            run()
        print(json.dumps({"peak_mb": _peak_rss_mb() - start_rss}))
        return
    runners = _runners(size, CONTENDERS, steps)
    # Interleaved, so that a slow spell of the machine hits every contender.
    times = {key: [] for key in runners}
    for _ in range(repeats):
        for key, (run, n) in runners.items():
            times[key].append(median_seconds(run, 1) / n)
    results = {}
    for (name, spe), t in times.items():
        results.setdefault(name, {})[spe] = 1.0 / statistics.median(t)
    print(json.dumps(results))


def table(results, sizes):
    """Markdown table: steps/s, ratio to the fastest baseline, memory."""
    lines = [
        "| backend | size | contender | steps/s (spe 1) | steps/s (spe 32) "
        "| joint / functional | joint / hand compiled | peak memory (MB) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for backend, by_key in results.items():
        for size in sizes:
            functional = by_key.get(f"{size}/functional", {})
            hand = by_key.get(f"{size}/hand compiled", {}).get("1")
            for contender in CONTENDERS:
                r = by_key.get(f"{size}/{contender}", {})
                if "1" not in r:  # PyTorch: no compiled hand loop
                    continue
                cells = [f"{r[k]:.0f}" if k in r else "-" for k in ("1", "32")]
                memory = f"{r['peak_mb']:.0f}" if "peak_mb" in r else "-"
                vs_functional = vs_hand = ""
                if contender == "joint":
                    spes = [k for k in ("1", "32") if k in r]
                    vs_functional = " / ".join(
                        f"{r[k] / functional[k]:.2f}" for k in spes
                    )
                    if hand:
                        vs_hand = " / ".join(f"{r[k] / hand:.2f}" for k in spes)
                lines.append(
                    f"| {backend} | {size} | {contender} | {cells[0]} | {cells[1]} "
                    f"| {vs_functional} | {vs_hand} | {memory} |"
                )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps-scale", type=float, default=1.0)
    parser.add_argument("--backends", nargs="+", default=None)
    parser.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="peak resident (CPU) memory per contender; --no-memory on a GPU",
    )
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(*args.worker, args.repeats, args.steps_scale)

    from benchmarks._timing import BACKENDS
    from benchmarks._timing import machine
    from benchmarks._timing import run_per_backend

    backends = args.backends or BACKENDS
    forwarded = ["--repeats", str(args.repeats), "--steps-scale", str(args.steps_scale)]
    results = {}
    for size in args.sizes:
        timed = run_per_backend(
            "benchmarks.step_time", forwarded, backends, worker_args=[size, "all"]
        )
        for backend, by_contender in timed.items():
            for contender, r in by_contender.items():
                results.setdefault(backend, {})[f"{size}/{contender}"] = r
        for contender in CONTENDERS if args.memory else ():
            memory = run_per_backend(
                "benchmarks.step_time",
                forwarded,
                backends,
                worker_args=[size, contender],
            )
            for backend, r in memory.items():
                entry = results[backend].setdefault(f"{size}/{contender}", {})
                entry.update(r)
    print(f"{machine()}; median of {args.repeats} runs")
    print(table(results, args.sizes))
    return results


if __name__ == "__main__":
    main()
