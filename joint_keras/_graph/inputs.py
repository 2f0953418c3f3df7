"""Routing a joint model's input to its submodels."""

import keras

from joint_keras._compile.checks import format_names


def route(inputs, submodels):
    """Returns `{name: input}`, each submodel's input.

    `inputs` is one input for every submodel; a dict keyed exactly by
    submodel name; or a list or tuple in submodel order, one entry each,
    when no submodel takes several inputs (a list is then one input given
    to every submodel). A dict whose keys name no submodel is one input for
    every submodel (a submodel taking a dict).

    Raises:
        ValueError: For a dict that names some submodels but not all, or
            names others too, and for a list of the wrong length.
    """
    names = list(submodels)
    if isinstance(inputs, dict):
        keys = list(inputs)
        unknown = [k for k in keys if k not in names]
        missing = [n for n in names if n not in inputs]
        if len(unknown) < len(keys):
            if missing or unknown:
                raise ValueError(
                    "When `x` is a dict keyed by submodel name, it needs exactly "
                    f"one entry per submodel; missing: {format_names(missing)}, "
                    f"naming no submodel: {format_names(unknown)}. To give the "
                    "same dict to every submodel, use keys that name no "
                    f"submodel. Submodels are {format_names(names)}."
                )
            return inputs
    elif isinstance(inputs, (list, tuple)) and not _takes_several_inputs(submodels):
        if len(inputs) != len(names):
            raise ValueError(
                "`x` given as a list maps to the submodels in order and needs "
                f"one entry per submodel ({len(names)}: {format_names(names)}); "
                f"it has {len(inputs)}. Pass one array for every submodel, or "
                "a dict keyed by submodel name."
            )
        return dict(zip(names, inputs))
    return {name: inputs for name in names}


def _takes_several_inputs(submodels):
    return any(len(_declared_inputs(m) or [None]) > 1 for m in submodels.values())


def _declared_inputs(model):
    try:
        return model.inputs
    except (AttributeError, ValueError):
        return None


def output_counts(submodels):
    """`{name: number of outputs}` for the submodels that declare them."""
    counts = {}
    for name, model in submodels.items():
        try:
            outputs = model.outputs
        except (AttributeError, ValueError):
            outputs = None
        if outputs:
            counts[name] = len(outputs)
    return counts


def output_names(submodels):
    """`{name: output names}` for the submodels with several declared
    outputs (a functional model's output layers' names, as
    `keras.Model.compile` keys a loss dict by them)."""
    names = {}
    for name, model in submodels.items():
        if output_counts({name: model}).get(name, 1) > 1:
            names[name] = list(getattr(model, "output_names", None) or []) or None
    return names


def input_signature(submodels, graph):
    """The joint model's input signature read from the submodels' inputs:
    for each submodel that takes its entry of `x` (`graph.takes_input`), the
    part of its declared inputs fed by `x`; one input when they all take
    the same, else a dict by name."""
    specs = {}
    for name in graph.takes_input:
        inputs = _declared_inputs(submodels[name])
        if not inputs:
            raise ValueError(
                f"Cannot read the input signature of submodel {name!r} "
                "(it has no `inputs`); pass `input_signature` to `export()`."
            )
        if len(inputs) == 1:
            inputs = inputs[0]
        elif hasattr(submodels[name], "input"):  # A functional model's structure.
            inputs = submodels[name].input
        part = graph.input_part(name, inputs)
        specs[name] = keras.tree.map_structure(
            lambda t: keras.InputSpec(shape=t.shape, dtype=t.dtype), part
        )
    if not specs:
        raise ValueError(
            "No submodel takes the joint model's input `x` (each is fed by "
            "`jk.Noise` or another submodel), so its signature cannot be read "
            "from the submodels: pass `input_signature` to `export()`, for "
            "example `[keras.InputSpec(shape=(None, 1))]` (`x` gives the "
            "batch size)."
        )

    def key(spec):
        return [(s.shape, s.dtype) for s in keras.tree.flatten(spec)]

    first = next(iter(specs.values()))
    if all(key(spec) == key(first) for spec in specs.values()):
        return first
    return specs
