"""The shared representation of a gradient-level strategy, probed.

A gradient-level strategy with `representation="trunk"` combines the tasks'
gradients with respect to the output of `"trunk"`: the step adds a zero
"probe" to that output and differentiates with respect to the probe.

- When `"trunk"` names a submodel (of the submodel graph), its output is a
  value of the forward pass: the probe is added there (`GraphProbe`).
- When it names a layer shared inside the submodels, each submodel that
  calls it is rebuilt (with Keras's public `clone_model`, sharing every
  layer) as two functional models: an `extractor` from its inputs to the
  layer's output and a `tail` from that output to its outputs; the probe
  goes between the two (`RepresentationSplit`).

Both give `probe_shapes(model, x)` (the shape of each probe) and
`forward(model, x, probes, training) -> (outputs, representations)`.
"""

import keras

from joint_keras._graph import inputs as _inputs
from joint_keras._step import variables as _variables


def for_model(model, name):
    """The probe plan for `representation=name` of a joint model."""
    if name in model.submodels:
        return GraphProbe(name)
    return RepresentationSplit(dict(model.submodels), name)


class GraphProbe:
    """The output of submodel `name`, probed inside the submodel graph."""

    def __init__(self, name):
        self.name = name

    def probe_shapes(self, model, x):
        routed = keras.tree.map_structure(_symbolic, model._routed(x))
        specs = model._graph.output_specs(dict(model.submodels), routed)
        return [_fill_batch(specs[self.name].shape, x)]

    def forward(self, model, x, probes, training):
        outputs, before = model._forward(x, training, {self.name: probes[0]})
        return outputs, [before[self.name]]


class RepresentationSplit:
    """The submodels that call layer `layer_name`, split at its output.

    Args:
        submodels: Dict name -> `keras.Model`.
        layer_name: Name of a layer (or nested model) that the submodels
            share; each must call it once, on the same input.
    """

    def __init__(self, submodels, layer_name):
        layer = _variables.find_layer(submodels.values(), layer_name)
        if layer is None:
            raise ValueError(
                f"`representation={layer_name!r}` names no layer of the "
                f"submodels {list(submodels)}."
            )
        self.parts = {}
        for name, model in submodels.items():
            if any(sub is layer for sub in _variables.walk_layers(model)):
                self.parts[name] = _split(model, layer, name)

    def forward(self, model, x, probes, training):
        """The submodels' outputs with `probes[i]` added to the i-th
        split submodel's representation.

        Returns:
            `(outputs, representations)`: a dict name -> output, and the
            representation of each split submodel (before its probe).
        """
        submodels = model.submodels
        inputs = _inputs.route(x, submodels)
        outputs, representations = {}, []
        for name, model in submodels.items():
            mode = training if model.trainable else False
            if name not in self.parts:
                outputs[name] = model(inputs[name], training=mode)
                continue
            extractor, tail = self.parts[name]
            representation = extractor(inputs[name], training=mode)
            probe = probes[len(representations)]
            representations.append(representation)
            outputs[name] = tail(representation + probe, training=mode)
        return outputs, representations

    def probe_shapes(self, model, x):
        """The shape of each split submodel's representation for `x` (the
        batch size a tensor where it is only known at run time)."""
        inputs = _inputs.route(x, model.submodels)
        shapes = []
        for name, (extractor, _) in self.parts.items():
            spec = keras.tree.map_structure(_symbolic, inputs[name])
            shapes.append(_fill_batch(extractor.compute_output_spec(spec).shape, x))
        return shapes


def _fill_batch(shape, x):
    """`shape` with a batch size known only at run time read from `x`."""
    if shape[0] is None:
        rows = keras.ops.shape(keras.tree.flatten(x)[0])[0]
        shape = (rows,) + tuple(shape[1:])
    return shape


def _symbolic(tensor):
    """A `KerasTensor` like `tensor` (dimensions known only at run time as
    `None`)."""
    shape = tuple(d if isinstance(d, int) else None for d in keras.ops.shape(tensor))
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    return keras.KerasTensor(shape, dtype=dtype)


def _split(model, layer, name):
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs)
    calls = []

    def call(called, *args, **kwargs):
        output = called(*args, **kwargs)
        if called is layer:
            calls.append(output)
        return output

    try:
        clone = keras.models.clone_model(
            model, clone_function=lambda sub: sub, call_function=call
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(
            f"`representation={layer.name!r}` needs functional submodels (or "
            f"Sequential ones) to be split at that layer; submodel {name!r} "
            f"could not be: {error}"
        ) from error
    if len(calls) != 1:
        raise ValueError(
            f"`representation={layer.name!r}`: submodel {name!r} calls that "
            f"layer {len(calls)} times directly; it must call it once (a "
            "layer nested inside another layer cannot be split at)."
        )
    inputs = clone.inputs[0] if len(clone.inputs) == 1 else clone.inputs
    outputs = clone.outputs[0] if len(clone.outputs) == 1 else clone.outputs
    return keras.Model(inputs, calls[0]), keras.Model(calls[0], outputs)
