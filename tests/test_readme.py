"""The README's example runs as printed, on this backend."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(library_warnings_are_errors):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    preds = namespace["preds"]
    assert list(preds) == ["model1", "model2"]
    assert all(p.shape == (1024, 1) and np.isfinite(p).all() for p in preds.values())


def test_readme_lists_every_weighting_strategy():
    from joint_keras import weighting

    text = README.read_text()
    missing = [name for name in weighting._BY_NAME if f'`"{name}"`' not in text]
    assert not missing, f"README's weighting table lacks {missing}"
