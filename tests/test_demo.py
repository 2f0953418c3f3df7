"""`make demo` runs: a short run of the demo on this backend."""

import re

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from joint_keras import demo  # noqa: E402

NUMBER = r"\d+\.\d{4}"


@pytest.mark.heavy
def test_demo_runs_and_writes_the_table_and_plot(
    tmp_path, capsys, library_warnings_are_errors
):
    demo.main(["--epochs", "1", "--seeds", "1", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "MutualKL(weight=" in out
    lines = out.splitlines()
    header = "Held-out test accuracy and log-loss, mean over 1 seed(s)"
    assert header in lines
    columns = lines[lines.index(header) + 1].split()
    assert columns[:9] == [
        "model",
        "acc",
        "alone",
        "acc",
        "joint",
        "logloss",
        "alone",
        "logloss",
        "joint",
    ]
    for name in ("mlp", "cnn"):
        row = rf"{name}\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+"
        row += r"[01]/1, [01]/1"
        match = next(filter(None, (re.fullmatch(row, line) for line in lines)))
        acc_alone, acc_joint, loss_alone, loss_joint = map(float, match.groups())
        assert 0.0 <= acc_alone <= 1.0 and 0.0 <= acc_joint <= 1.0
        assert loss_alone > 0.0 and loss_joint > 0.0
    png = tmp_path / "joint_loss_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("flag", ["--epochs", "--seeds"])
def test_demo_rejects_non_positive_counts(flag):
    with pytest.raises(SystemExit):
        demo.parse_args([flag, "0"])
