"""The benchmark scripts run, in a tiny configuration, so they cannot rot.

They are timed by hand (see the README), never asserted on here.
"""

import pytest

from benchmarks import combine_step
from benchmarks import shared_trunk
from benchmarks import step_time
from benchmarks import weighting_step_time
from tests.conftest import BACKEND

pytestmark = pytest.mark.heavy


def test_weighting_step_time_runs_and_prints_its_table(capsys):
    strategies = ["fixed", "pcgrad", "upgrad@trunk", "mgda/sequential"]
    results = weighting_step_time.main(
        ["--tasks", "2", "3", "--steps", "2", "--repeats", "1"]
        + ["--strategies", *strategies, "--backends", BACKEND]
    )
    assert set(results) == {BACKEND}
    assert set(results[BACKEND]) == {f"{k}/{s}" for k in (2, 3) for s in strategies}
    assert all(seconds > 0 for seconds in results[BACKEND].values())
    table = capsys.readouterr().out
    assert "| upgrad@trunk |" in table and "| K=3 |" in table


def test_step_time_runs_every_contender_and_prints_its_table(capsys):
    # Peak memory takes a process per contender: measured on one backend.
    memory = BACKEND == "jax"
    results = step_time.main(
        ["--sizes", "small", "--repeats", "1", "--steps-scale", "0.01"]
        + ["--backends", BACKEND, "--memory" if memory else "--no-memory"]
    )
    by_contender = results[BACKEND]
    spes = {"1"} if BACKEND == "torch" else {"1", "32"}
    for contender in ("functional", "joint"):
        entry = by_contender[f"small/{contender}"]
        assert set(entry) == (spes | {"peak_mb"} if memory else spes)
        assert all(entry[spe] > 0 for spe in spes)
    assert by_contender["small/hand eager"]["1"] > 0
    if BACKEND != "torch":
        assert by_contender["small/hand compiled"]["1"] > 0
    table = capsys.readouterr().out
    assert f"| {BACKEND} | small | joint |" in table


def test_combine_step_times_every_gradient_level_strategy(capsys):
    results = combine_step.main(
        ["--tasks", "2", "3", "--calls", "2", "--backends", BACKEND]
    )
    names = {"call overhead", *combine_step.STRATEGIES}
    assert set(results[BACKEND]) == {f"{k}/{s}" for k in (2, 3) for s in names}
    assert all(seconds > 0 for seconds in results[BACKEND].values())
    assert "| gradvac |" in capsys.readouterr().out


def test_shared_trunk_runs_both_contenders_and_prints_its_table(capsys):
    results = shared_trunk.main(
        ["--steps", "2", "--repeats", "1", "--backends", BACKEND]
    )
    spes = (1,) if BACKEND == "torch" else (1, 16)
    for contender in ("functional", "joint"):
        assert all(results[BACKEND][f"{contender}/{spe}"] > 0 for spe in spes)
    assert f"| {BACKEND} | 1 |" in capsys.readouterr().out
