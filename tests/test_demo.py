"""`make demo` runs: a one-epoch run of the demo on this backend."""

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from joint_keras import demo  # noqa: E402


def test_demo_runs_and_writes_the_plot(tmp_path, capsys):
    demo.main(["--epochs", "1", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "Held-out test accuracy" in out
    for name in ("mlp", "cnn"):
        assert any(line.startswith(name) for line in out.splitlines())
    png = tmp_path / "joint_loss_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
