"""Distributed training gives the one-device result.

`tests/distributed/run.py` trains the cases of `tests/distributed/cases.py`
(fixed weights with a joint loss, a routed joint loss with one optimizer per
submodel, loss-level and gradient-level strategies) in a subprocess per
distribution mode, on virtual devices of this machine; each case's final
weights (strategy state included) and last-epoch logs must equal those of a
one-device run on the same global batches, to float32 tolerance.

TensorFlow: `MirroredStrategy` over two logical CPUs, and
`MultiWorkerMirroredStrategy` with two worker processes on 127.0.0.1.
JAX: `keras.distribution.DataParallel` and `ModelParallel` over two host
devices, and `DataParallel` over two processes on 127.0.0.1 joined by
`keras.distribution.initialize` (one CPU device each). PyTorch has no
Keras distribution API (see the README).
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import BACKEND
from tests.distributed.cases import CASES

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODES = {
    "tensorflow": ("tf-mirrored", "tf-worker"),
    "jax": ("jax-data-parallel", "jax-model-parallel", "jax-process"),
}
TIMEOUT = 240

pytestmark = [
    pytest.mark.skipif(
        BACKEND not in MODES, reason=f"no Keras distribution API on {BACKEND}"
    ),
    # In one pytest-xdist worker, which runs each mode's subprocesses once.
    pytest.mark.xdist_group("distributed"),
]


def _start(mode, out, **env):
    env = dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=str(ROOT), **env)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.distributed.run", mode, str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(procs):
    for name, proc in procs.items():
        try:
            output, _ = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for p in procs.values():
                p.kill()
            pytest.fail(f"{name} did not finish in {TIMEOUT} s")
        assert proc.returncode == 0, f"{name} failed:\n{output[-3000:]}"


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


_RESULTS = {}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """`results(mode)`: the saved arrays of a mode's run, run once."""
    out = tmp_path_factory.mktemp("distributed")

    def get(mode):
        if mode in _RESULTS:
            return _RESULTS[mode]
        if mode in ("tf-worker", "jax-process"):
            procs = {}
            for index, env in enumerate(_process_envs(mode)):
                procs[f"process {index}"] = _start(
                    mode, out / f"{mode}{index}.npz", **env
                )
            _wait(procs)
            runs = [dict(np.load(out / f"{mode}{i}.npz")) for i in range(2)]
            for case in CASES:
                _case(runs[1], case)
            # Both processes hold the same model.
            _assert_same(runs[1], runs[0], "process 1 vs process 0")
            _RESULTS[mode] = runs[0]
        else:
            _wait({mode: _start(mode, out / f"{mode}.npz")})
            _RESULTS[mode] = dict(np.load(out / f"{mode}.npz"))
        return _RESULTS[mode]

    return get


def _process_envs(mode):
    """The environment of each of two processes that join one run."""
    if mode == "tf-worker":
        workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
        configs = [
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            for i in range(2)
        ]
        return [{"TF_CONFIG": json.dumps(config)} for config in configs]
    (port,) = _free_ports(1)
    return [
        {"JK_COORDINATOR": f"127.0.0.1:{port}", "JK_PROCESS_ID": str(i)}
        for i in range(2)
    ]


def _assert_same(got, want, what):
    assert set(got) == set(want), f"{what}: {sorted(set(got) ^ set(want))}"
    for key, value in want.items():
        if value.dtype.kind in "US":
            assert got[key] == value, key
            continue
        np.testing.assert_allclose(
            got[key], value, rtol=1e-4, atol=1e-5, err_msg=f"{what}: {key}"
        )


def _case(arrays, case):
    error = arrays.get(f"{case}/error")
    assert error is None, f"{case}: {error}"
    return {k: v for k, v in arrays.items() if k.startswith(f"{case}/")}


@pytest.mark.parametrize("mode", MODES.get(BACKEND, ()))
@pytest.mark.parametrize("case", CASES)
def test_distributed_training_matches_one_device(results, mode, case):
    single = _case(results("single"), case)
    distributed = results(mode)
    assert distributed["devices"] == 2
    _assert_same(_case(distributed, case), single, f"{mode}, {case}")
    # Not vacuous: the case trained (its first weight moved from the start).
    assert results("single")["devices"] == 1
    initial = results("single")[f"{case}/initial0"]
    assert not np.allclose(single[f"{case}/weight0"], initial)
