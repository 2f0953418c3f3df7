"""A joint model's submodels: checked, configured, and rebuilt on loading.

Each submodel serializes on its own, so a layer used by two submodels appears
in both configs and comes back as two independent layers. (Keras's
`shared_object_id` cannot help: a Functional config numbers a layer's calls
relative to its own graph, so a layer that already has calls from another
submodel breaks its reconstruction.) `JointModel` records which layers are
shared and ties them back together after deserializing. It also records
which submodels are frozen: Keras restores a `Sequential` saved with
`trainable=False` as trainable.
"""

import keras

from joint_keras._compile import checks as _checks
from joint_keras._step import variables as _variables


def standardize_submodels(submodels):
    """Validates `submodels` and returns a dict name -> model."""
    if isinstance(submodels, (list, tuple)):
        for i, model in enumerate(submodels):
            _check_is_model(model, f"submodels[{i}]")
        named = {}
        for model in submodels:
            if model.name in named:
                raise ValueError(
                    "Models given as a list are named by their `.name`, "
                    f"and two have the name {model.name!r}. Give them "
                    "distinct names, or pass a dict `{name: model}`."
                )
            named[model.name] = model
    elif isinstance(submodels, dict):
        named = dict(submodels)
    else:
        raise TypeError(
            "`submodels` must be a dict `{name: keras.Model}` or a list of "
            f"`keras.Model`. Received: submodels={submodels!r} of type "
            f"{type(submodels).__name__}"
        )
    if not named:
        raise ValueError(
            "`submodels` must contain at least one model. "
            f"Received: submodels={submodels!r}"
        )
    for name, model in named.items():
        _checks.check_name(name, "Submodel")
        _check_is_model(model, f"submodels[{name!r}]")
    return named


def _check_is_model(model, where):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{where}` must be a `keras.Model`. Received: {model!r} of "
            f"type {type(model).__name__}"
        )


def shared_layers_hint(submodels, name):
    """A sentence naming the layers submodel `name` shares, or ""."""
    shared = {
        layer.name: owners
        for layer, owners in _variables.shared_layers(submodels).items()
        if name in owners
    }
    if not shared:
        return ""
    return (
        " It shares layers with other submodels "
        f"(layer: submodels) {shared}; a shared layer must receive "
        "inputs of the same shape from every submodel that uses it."
    )


def config(submodels, graph):
    """The config entries of a joint model's submodels and graph."""
    result = {
        "submodels": {
            name: keras.saving.serialize_keras_object(model)
            for name, model in submodels.items()
        }
    }
    shared = {
        layer.name: list(owners)
        for layer, owners in _variables.shared_layers(submodels).items()
    }
    if shared:
        result["shared_layers"] = shared
    frozen = [name for name, model in submodels.items() if not model.trainable]
    if frozen:
        result["frozen"] = frozen
    if not graph.is_trivial:
        result["inputs"] = graph.get_config()
    return result


def from_config(config, custom_objects=None):
    """`JointModel`'s constructor arguments from its config."""
    config = dict(config)
    shared = config.pop("shared_layers", None)
    frozen = config.pop("frozen", [])
    submodels = {
        name: keras.saving.deserialize_keras_object(
            sub_config, custom_objects=custom_objects
        )
        for name, sub_config in config["submodels"].items()
    }
    for layer_name, owners in (shared or {}).items():
        keeper = _variables.find_layer([submodels[owners[0]]], layer_name)
        for owner in owners[1:]:
            if _variables.find_layer([submodels[owner]], layer_name) is not keeper:
                submodels[owner] = _tie(submodels[owner], layer_name, keeper)
        found = {id(_variables.find_layer([submodels[o]], layer_name)) for o in owners}
        if len(found) != 1:
            raise ValueError(
                f"Layer {layer_name!r} was shared by submodels {owners} when "
                "saved, but could not be shared again on loading. Sharing "
                "is restored for Sequential and Functional submodels only."
            )
    for name in frozen:
        submodels[name].trainable = False
    config["submodels"] = submodels
    if "inputs" in config:
        config["inputs"] = {
            name: keras.saving.deserialize_keras_object(source)
            for name, source in config["inputs"].items()
        }
    return config


def _tie(model, layer_name, keeper):
    """Returns a clone of `model` that calls `keeper` for `layer_name`."""

    def reuse(layer):
        return keeper if layer.name == layer_name else layer

    try:
        clone = keras.models.clone_model(model, clone_function=reuse, recursive=True)
    except Exception:  # Subclassed models cannot be rewired: said above.
        return model
    clone.name = model.name
    return clone
