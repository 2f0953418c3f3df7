"""The package's source keeps its structural promises: private Keras only in
the compat module, no thread-local scratch state, small modules."""

import ast
import functools
import pathlib

import keras
import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "joint_keras"
COMPAT = PACKAGE / "_compat.py"


@functools.cache
def keras_private_names():
    """Underscore attributes that Keras's own classes define."""
    objects = [
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]),
        keras.layers.Dense(1),
        keras.optimizers.Adam(),
        keras.optimizers.MultiOptimizer(lambda v: None),
        keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()),
        keras.metrics.Mean(),
        keras.losses.MeanSquaredError(),
        keras.callbacks.Callback(),
        keras.callbacks.CallbackList([]),
        keras.Variable(1.0),
        keras.StatelessScope(),
        keras.random.SeedGenerator(1),
    ]
    return {
        name
        for obj in objects
        for name in dir(obj)
        if name.startswith("_") and not name.startswith("__")
    }


def sources():
    return sorted(p for p in PACKAGE.rglob("*.py") if p != COMPAT)


def imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            yield node, [node.module or ""]


@pytest.mark.parametrize("path", sources(), ids=lambda p: p.name)
def test_no_private_keras_outside_the_compat_module(path):
    tree = ast.parse(path.read_text())
    private = keras_private_names()
    problems = [
        f"{path.name}:{node.lineno} imports {module}"
        for node, modules in imports(tree)
        for module in modules
        if module.startswith("keras.src")
    ]
    problems += [
        f"{path.name}:{node.lineno} reads Keras's private `.{node.attr}`"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in private
    ]
    problems += [
        f"{path.name}:{node.lineno} imports threading"
        for node, modules in imports(tree)
        for module in modules
        if module.split(".")[0] == "threading"
    ]
    assert not problems, "\n".join(problems)


def test_the_scan_finds_what_it_looks_for():
    # The rule must be able to fail: the compat module breaks it on purpose.
    tree = ast.parse(COMPAT.read_text())
    assert any(m.startswith("keras.src") for _, ms in imports(tree) for m in ms)
    private = keras_private_names()
    assert any(
        isinstance(n, ast.Attribute) and n.attr in private for n in ast.walk(tree)
    )


def test_module_sizes():
    lines = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines())
             for p in PACKAGE.rglob("*.py")}  # fmt: skip
    # The model class stays thin: the step, the plan and the checks live in
    # modules of their own.
    assert lines["joint_model.py"] <= 320, lines["joint_model.py"]
    backends = [k for k in lines if k.startswith("backend/") and "__init__" not in k]
    assert len(backends) == 3
    # Small, with the same interface; JAX's also reads which variables a
    # gradient depends on off its jaxpr (the others' autodiff says `None`).
    for name in backends:
        assert lines[name] <= 190, (name, lines[name])


def test_private_modules_are_grouped_by_stage():
    # The tree shows the pipeline: private modules live in the folder of the
    # stage they serve (_compile, _graph, _step, _logs, _saving), the one
    # compat module aside.
    top = sorted(p.name for p in PACKAGE.glob("_*.py") if p.name != "__init__.py")
    assert top == ["_compat.py"], top


def test_backend_modules_have_the_same_public_functions():
    def public(path):
        tree = ast.parse(path.read_text())
        return sorted(
            node.name
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))
            and not node.name.startswith("_")
        )

    names = {p.name: public(p) for p in (PACKAGE / "backend").glob("[!_]*.py")}
    assert len(set(map(tuple, names.values()))) == 1, names
