"""Every Python block of the documentation runs, on this backend: each page
of `docs/` (and the README) top to bottom in one namespace, as a reader
would paste them; and each `Example:` of the public API's docstrings on its
own, with `keras`, `np` (NumPy) and `jk` imported, as Keras's docstrings
assume."""

import inspect
import pathlib
import re
import textwrap

import keras
import numpy as np
import pytest

import joint_keras as jk

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
# A fenced block, possibly indented inside a list item.
BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)


def python_blocks(text):
    return [textwrap.dedent(code) for _, code in BLOCK.findall(text)]


def public_objects():
    """(qualified name, object) of every public class and function, and
    every public method and property defined on them."""
    found = {}
    modules = {"jk": jk, "jk.losses": jk.losses, "jk.weighting": jk.weighting}
    modules["jk.callbacks"] = jk.callbacks
    for prefix, module in modules.items():
        for name in getattr(module, "__all__", dir(module)):
            obj = getattr(module, name)
            if name.startswith("_") or not (
                inspect.isclass(obj) or inspect.isfunction(obj)
            ):
                continue
            found.setdefault(obj, f"{prefix}.{name}")
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") or attr == "__init__":
                        found.setdefault(member, f"{prefix}.{name}.{attr}")
    return sorted(((qualname, obj) for obj, qualname in found.items()))


def examples(obj):
    """The fenced code blocks of a docstring's `Example:` section."""
    # Its own docstring only: an inherited Keras method's examples are Keras's.
    function = obj.fget if isinstance(obj, property) else obj
    doc = inspect.cleandoc(function.__doc__ or "")
    section = re.split(r"^Examples?:\s*$", doc, maxsplit=1, flags=re.M)
    return python_blocks(section[1]) if len(section) == 2 else []


PAGES_WITH_CODE = [p for p in PAGES if python_blocks(p.read_text())]
EXAMPLES = [
    (f"{qualname}:{i}", code)
    for qualname, obj in public_objects()
    for i, code in enumerate(examples(obj))
]


def test_the_docs_and_docstrings_have_code():
    assert len(PAGES_WITH_CODE) >= 2 and EXAMPLES


@pytest.mark.parametrize(
    "page", PAGES_WITH_CODE, ids=[str(p.relative_to(ROOT)) for p in PAGES_WITH_CODE]
)
def test_page_code_runs(page, library_warnings_are_errors):
    namespace = {"__name__": "__docs__"}
    for code in python_blocks(page.read_text()):
        exec(compile(code, str(page), "exec"), namespace)


@pytest.mark.parametrize("name, code", EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_docstring_example_runs(name, code, library_warnings_are_errors):
    namespace = {"__name__": "__docs__", "keras": keras, "np": np, "jk": jk}
    exec(compile(code, name, "exec"), namespace)
