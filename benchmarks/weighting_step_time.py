"""Step time of each weighting strategy relative to fixed weighting.

```
python -m benchmarks.weighting_step_time [--tasks 2 4 8] [--steps 64]
                                         [--repeats 3] [--backends ...]
```

The model is the usual hard-parameter-sharing one: a shared trunk (a nested
model "trunk" of two Dense(256, relu) layers on 64 inputs) and one Dense(1)
head per task, batch 128, SGD. `name@trunk` is the strategy on the trunk's
output (`representation="trunk"`); `name/vectorized` and `name/sequential`
force how the per-task gradients are computed (`per_task_gradients`:
`sequential` is one backward pass per task, LibMTL's method; the default
chooses per backend and device). Each backend runs in its own process;
each configuration is timed over `--steps` training steps (after a warm-up
epoch that compiles the step), and the median of `--repeats` runs is
reported, with its ratio to fixed weighting on the same backend and number
of tasks.
"""

import argparse
import json

STRATEGIES = (
    "fixed",
    "uncertainty",
    "dwa",
    "rlw",
    "famo",
    "gradnorm",
    "pcgrad",
    "graddrop",
    "mgda",
    "upgrad",
    "dualproj",
    "cagrad",
    "imtlg",
    "aligned_mtl",
    "config",
    "gradvac",
    "nash_mtl",
    "fairgrad",
    "dbmtl",
    "mgda/vectorized",
    "mgda/sequential",
    "pcgrad@trunk",
    "mgda@trunk",
    "upgrad@trunk",
    "mgda@trunk/vectorized",
    "mgda@trunk/sequential",
)
BATCH = 128


def shared_trunk_model(num_tasks):
    import keras

    import joint_keras as jk

    inputs = keras.Input((64,))
    trunk = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
        ],
        name="trunk",
    )
    hidden = trunk(inputs)
    return jk.JointModel(
        {
            f"task{k}": keras.Model(
                inputs, keras.layers.Dense(1, name=f"head{k}")(hidden)
            )
            for k in range(num_tasks)
        }
    )


def time_strategy(strategy, num_tasks, steps, repeats):
    import keras
    import numpy as np

    import joint_keras as jk
    from benchmarks._timing import fit_runner
    from benchmarks._timing import median_seconds

    keras.utils.set_random_seed(0)
    model = shared_trunk_model(num_tasks)
    name, _, mode = strategy.partition("/")  # "mgda/sequential"
    name, _, layer = name.partition("@")  # "pcgrad@trunk": the trunk's output
    if layer or mode:
        strategy = type(jk.weighting.get(name))(
            representation=layer or None, per_task_gradients=mode or "auto"
        )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", weighting=strategy)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * steps, 64)).astype("float32")
    y = {
        f"task{k}": rng.normal(size=(BATCH * steps, 1)).astype("float32")
        for k in range(num_tasks)
    }

    fit = fit_runner(model, x, y, BATCH, steps)
    fit(2)  # compiles the step
    return median_seconds(fit, repeats) / steps


def worker(tasks, steps, repeats, strategies):
    results = {}
    for num_tasks in tasks:
        for strategy in strategies:
            seconds = time_strategy(strategy, num_tasks, steps, repeats)
            results[f"{num_tasks}/{strategy}"] = seconds
    print(json.dumps(results))


def table(results, tasks, strategies):
    lines = []
    for backend, times in results.items():
        header = "| strategy | " + " | ".join(f"K={k}" for k in tasks) + " |"
        lines += [f"\n{backend} (step time relative to fixed; fixed in ms)", header]
        lines.append("|" + "---|" * (len(tasks) + 1))
        for strategy in strategies:
            cells = []
            for k in tasks:
                t, base = times[f"{k}/{strategy}"], times[f"{k}/fixed"]
                cells.append(
                    f"{t * 1e3:.2f} ms" if strategy == "fixed" else f"{t / base:.2f}x"
                )
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--backends", nargs="+", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.tasks, args.steps, args.repeats, args.strategies)

    from benchmarks._timing import BACKENDS
    from benchmarks._timing import machine
    from benchmarks._timing import run_per_backend

    forwarded = ["--tasks", *map(str, args.tasks), "--steps", str(args.steps)]
    forwarded += ["--repeats", str(args.repeats), "--strategies", *args.strategies]
    results = run_per_backend(
        "benchmarks.weighting_step_time", forwarded, args.backends or BACKENDS
    )
    print(f"{machine()}, batch {BATCH}, {args.steps} steps per run")
    print(table(results, args.tasks, args.strategies))
    return results


if __name__ == "__main__":
    main()
