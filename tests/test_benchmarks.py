"""The benchmark scripts run, in a tiny configuration, so they cannot rot.

They are timed by hand (see the README), never asserted on here.
"""

from benchmarks import weighting_step_time
from tests.conftest import BACKEND


def test_weighting_step_time_runs_and_prints_its_table(capsys):
    strategies = ["fixed", "pcgrad", "upgrad@trunk"]
    results = weighting_step_time.main(
        ["--tasks", "2", "3", "--steps", "2", "--repeats", "1"]
        + ["--strategies", *strategies, "--backends", BACKEND]
    )
    assert set(results) == {BACKEND}
    assert set(results[BACKEND]) == {f"{k}/{s}" for k in (2, 3) for s in strategies}
    assert all(seconds > 0 for seconds in results[BACKEND].values())
    table = capsys.readouterr().out
    assert "| upgrad@trunk |" in table and "| K=3 |" in table
