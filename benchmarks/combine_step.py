"""Time per step of each gradient-level strategy's combine step.

```
python -m benchmarks.combine_step [--tasks 2 4 8] [--calls 300]
                                  [--strategies ...] [--backends ...]
```

The combine step is what a gradient-level strategy adds to a step once the
per-task gradients are known: the Gram matrix of `K` gradients to the
coefficients of the update (`Weighting.coefficients`; GradDrop's
`Weighting.combine`, which works on the gradients themselves). It is timed
as a training step runs it: TensorFlow inside `tf.function`, JAX inside
`jax.jit`, PyTorch eagerly, on the Gram matrix of `K` random gradients in
R^1000. Each backend runs in its own process; each entry is the median over
`--calls` calls after a warm-up that compiles. The "call overhead" row
times a compiled function that returns its input: the part of every entry
that a combine step inside a compiled training step does not pay.

The strategies that the installed `joint_keras` lacks are left out, so the
same script times an older version (`PYTHONPATH=<old checkout>`).
"""

import argparse
import functools
import json
import os

STRATEGIES = (
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
)
DIMENSION = 1000


def combine_fn(name, num_tasks):
    """`(fn(gram, jacobian) -> tensor, state)`: the strategy's combine step
    and its variables, or None where the installed `joint_keras` does not
    have the strategy."""
    import joint_keras as jk

    try:
        strategy = jk.weighting.get(name)
    except ValueError:
        return None
    indices = list(range(num_tasks))
    strategy.build_for_tasks([f"t{k}" for k in indices], [1.0] * num_tasks)
    losses = [1.0 + k for k in indices]

    def fn(gram, jacobian):
        combine = getattr(strategy, "combine", lambda *args: None)
        combined = combine([jacobian], losses, indices, True)
        if combined is not None:
            return combined[0][0]
        return strategy.coefficients(gram, losses, indices, True)[0]

    return fn, list(strategy.variables)


def compiled(fn, state):
    """`fn` as a training step runs it: traced on TF and JAX (with the
    variables in `state` threaded through, as a JAX step threads them),
    eager on torch."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=False, autograph=False)
    if backend == "torch":
        import torch

        def run_eager(*args):
            out = fn(*args)
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # a GPU runs the kernels later
            return out

        return run_eager
    import jax

    def stateless(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(state, values))) as scope:
            out = fn(*args)
        return out, [scope.get_current_value(v) for v in state]

    jitted = jax.jit(stateless)
    values = [v.value for v in state]

    def run(*args):
        nonlocal values
        out, values = jitted(values, *args)
        return jax.block_until_ready(out)

    return run


def worker(tasks, calls, strategies):
    import numpy as np
    from keras import ops

    from benchmarks._timing import median_seconds

    results = {}
    for num_tasks in tasks:
        rng = np.random.default_rng(num_tasks)
        jac = rng.normal(size=(num_tasks, DIMENSION)).astype("float32")
        args = (ops.convert_to_tensor(jac @ jac.T), ops.convert_to_tensor(jac))
        fns = {"call overhead": (lambda gram, jacobian: gram, [])}
        for name in strategies:
            found = combine_fn(name, num_tasks)
            if found is not None:
                fns[name] = found
        for name, (fn, state) in fns.items():
            run = functools.partial(compiled(fn, state), *args)
            for _ in range(10):
                run()
            results[f"{num_tasks}/{name}"] = median_seconds(run, calls)
    print(json.dumps(results))


def table(results, tasks, strategies):
    lines = []
    for backend, times in results.items():
        lines += [f"\n{backend} (ms per step, median)"]
        lines.append("| strategy | " + " | ".join(f"K={k}" for k in tasks) + " |")
        lines.append("|" + "---|" * (len(tasks) + 1))
        for name in ("call overhead", *strategies):
            if f"{tasks[0]}/{name}" in times:
                cells = [f"{times[f'{k}/{name}'] * 1e3:.3f}" for k in tasks]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--backends", nargs="+", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.tasks, args.calls, args.strategies)

    from benchmarks._timing import BACKENDS
    from benchmarks._timing import machine
    from benchmarks._timing import run_per_backend

    forwarded = ["--tasks", *map(str, args.tasks), "--calls", str(args.calls)]
    forwarded += ["--strategies", *args.strategies]
    results = run_per_backend(
        "benchmarks.combine_step", forwarded, args.backends or BACKENDS
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{machine()} (load average {load}), {args.calls} calls")
    print(table(results, args.tasks, args.strategies))
    return results


if __name__ == "__main__":
    main()
