"""Shared helpers: run a benchmark once per backend, each in its own process."""

import json
import os
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")


def median_seconds(fn, repeats):
    """Median wall time of `fn()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fit_runner(model, x, y, batch_size, steps):
    """`run(n=steps)`: one epoch of `model.fit` on the first `n` batches of
    `x` and the dict `y`, in order, silently: what the benchmarks time."""

    def run(n=steps):
        rows = batch_size * n
        model.fit(
            x[:rows],
            {k: v[:rows] for k, v in y.items()},
            batch_size=batch_size,
            epochs=1,
            verbose=0,
            shuffle=False,
        )

    return run


def machine():
    """What a benchmark ran on, for its table's header: the CPU cores, and
    the GPUs that `nvidia-smi -L` lists, if any."""
    try:
        gpus = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        gpus = ""
    cores = f"{os.cpu_count()} CPU cores"
    return f"{cores}, {gpus}" if gpus else cores


def run_per_backend(module, args, backends=BACKENDS, worker_args=()):
    """Runs `python -m module --worker [worker_args...] args...` once per
    backend and returns `{backend: json result}`."""
    results = {}
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        out = subprocess.run(
            [sys.executable, "-m", module, "--worker", *worker_args, *args],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results[backend] = json.loads(out.strip().splitlines()[-1])
    return results
