"""Multi-task with a shared trunk: `JointModel` with a submodel graph
against the functional two-output model.

```
python -m benchmarks.shared_trunk [--steps 256] [--repeats 5] [--backends ...]
```

The keras.io functional-API multi-task setup: a trunk of two `Dense(256,
relu)` on 64 inputs, two `Dense(1)` heads ("priority", "department"),
`loss_weights` 1.0 / 0.2, MSE, Adam, batch 64. Contenders, from the same
initial weights:

- `functional`: one Keras functional model with two outputs.
- `joint`: `jk.JointModel({"trunk": ..., "priority": ..., "department":
  ...}, inputs={"priority": "trunk", "department": "trunk"})`: the trunk is
  computed once per step.

Both run `fit()` at `steps_per_execution` 1 and 16 (PyTorch: 1). One step of
each is first checked to update the weights the same way (the same work).
Both are timed in one process per backend, interleaved, median of
`--repeats` runs of `--steps` steps after a warm-up run.
"""

import argparse
import json
import statistics
import time

INPUTS, HIDDEN, BATCH = 64, 256, 64
WEIGHTS = {"priority": 1.0, "department": 0.2}


def _layers(seed):
    import keras

    keras.utils.set_random_seed(seed)
    return {
        "trunk": [keras.layers.Dense(HIDDEN, activation="relu") for _ in range(2)],
        "priority": keras.layers.Dense(1),
        "department": keras.layers.Dense(1),
    }


def functional(seed=0, layers=None):
    import keras

    layers = layers or _layers(seed)
    inputs = keras.Input((INPUTS,))
    hidden = inputs
    for layer in layers["trunk"]:
        hidden = layer(hidden)
    outputs = {
        "priority": layers["priority"](hidden),
        "department": layers["department"](hidden),
    }
    return keras.Model(inputs, outputs)


def joint(seed=0, layers=None):
    import keras

    import joint_keras as jk

    layers = layers or _layers(seed)
    trunk = keras.Sequential([keras.Input((INPUTS,)), *layers["trunk"]], name="trunk")
    heads = {
        name: keras.Sequential([keras.Input((HIDDEN,)), layers[name]], name=name)
        for name in WEIGHTS
    }
    return jk.JointModel(
        {"trunk": trunk, **heads}, inputs={name: "trunk" for name in WEIGHTS}
    )


def compiled(model, spe):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={name: "mse" for name in WEIGHTS},
        loss_weights=dict(WEIGHTS),
        steps_per_execution=spe,
    )
    return model


def data(steps):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * steps, INPUTS)).astype("float32")
    y = {n: rng.normal(size=(BATCH * steps, 1)).astype("float32") for n in WEIGHTS}
    return x, y


def check_same_step():
    """One step of each from the same weights gives the same weights."""
    import numpy as np

    x, y = data(1)
    layers_a, layers_b = _layers(0), _layers(0)
    for layers, build in ((layers_a, functional), (layers_b, joint)):
        model = compiled(build(layers=layers), 1)
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    for name in layers_a:
        group_a = layers_a[name] if name == "trunk" else [layers_a[name]]
        group_b = layers_b[name] if name == "trunk" else [layers_b[name]]
        for la, lb in zip(group_a, group_b):
            for u, v in zip(la.get_weights(), lb.get_weights()):
                np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


def worker(steps, repeats):
    import keras

    from benchmarks._timing import fit_runner

    check_same_step()
    spes = [1] if keras.backend.backend() == "torch" else [1, 16]
    x, y = data(steps)
    runs = {}
    for spe in spes:
        for name, build in (("functional", functional), ("joint", joint)):
            run = fit_runner(compiled(build(), spe), x, y, BATCH, steps)
            run(2 * spe)  # compiles the step
            runs[(name, spe)] = run
    times = {key: [] for key in runs}
    for _ in range(repeats):  # interleaved
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    results = {
        f"{name}/{spe}": steps / statistics.median(seconds)
        for (name, spe), seconds in times.items()
    }
    print(json.dumps(results))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.steps, args.repeats)

    from benchmarks._timing import BACKENDS
    from benchmarks._timing import machine
    from benchmarks._timing import run_per_backend

    forwarded = ["--steps", str(args.steps), "--repeats", str(args.repeats)]
    results = run_per_backend(
        "benchmarks.shared_trunk", forwarded, args.backends or BACKENDS
    )
    print(f"{machine()}, batch {BATCH}, {args.steps} steps per run")
    print("| backend | spe | functional steps/s | joint steps/s | joint / functional |")
    print("|---|---:|---:|---:|---:|")
    for backend, by_key in results.items():
        for spe in (1, 16):
            if f"joint/{spe}" in by_key:
                f, j = by_key[f"functional/{spe}"], by_key[f"joint/{spe}"]
                print(f"| {backend} | {spe} | {f:.0f} | {j:.0f} | {j / f:.2f} |")
    return results


if __name__ == "__main__":
    main()
