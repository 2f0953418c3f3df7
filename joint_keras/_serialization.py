"""Serializing submodels that share layers, so the sharing survives reload.

Each submodel serializes on its own, so a layer used by two submodels appears
in both configs and comes back as two independent layers. (Keras's
`shared_object_id` cannot help: a Functional config numbers a layer's calls
relative to its own graph, so a layer that already has calls from another
submodel breaks its reconstruction.) `JointModel` records which layers are
shared and ties them back together after deserializing.
"""

import keras


def shared_layers(submodels):
    """Returns `{layer: [submodel names]}` for layers used by several.

    Input layers are left out: submodels built on one `keras.Input` share
    it, but it holds no state, so each may get its own back.
    """
    owners = {}
    for name, model in submodels.items():
        for layer in model._flatten_layers(include_self=False):
            if not isinstance(layer, keras.layers.InputLayer):
                owners.setdefault(layer, []).append(name)
    return {layer: names for layer, names in owners.items() if len(names) > 1}


def serialize_submodels(submodels):
    """Returns `(configs, shared)`: a config per submodel, and the shared
    layers as `{layer name: [submodel names]}`."""
    configs = {
        name: keras.saving.serialize_keras_object(model)
        for name, model in submodels.items()
    }
    shared = {
        layer.name: list(owners) for layer, owners in shared_layers(submodels).items()
    }
    return configs, shared


def deserialize_submodels(configs, shared, custom_objects=None):
    """Rebuilds the submodels, then ties each shared layer back together.

    A shared layer comes back once per submodel; every submodel after the
    first that uses it is cloned (`keras.models.clone_model`, which keeps
    all its other layers) so that it calls the first submodel's layer.
    """
    submodels = {
        name: keras.saving.deserialize_keras_object(
            config, custom_objects=custom_objects
        )
        for name, config in configs.items()
    }
    for layer_name, owners in (shared or {}).items():
        keeper = _find_layer(submodels[owners[0]], layer_name)
        for owner in owners[1:]:
            if _find_layer(submodels[owner], layer_name) is not keeper:
                submodels[owner] = _tie(submodels[owner], layer_name, keeper)
        if len({id(_find_layer(submodels[o], layer_name)) for o in owners}) != 1:
            raise ValueError(
                f"Layer {layer_name!r} was shared by submodels {owners} when "
                "saved, but could not be shared again on loading. Sharing "
                "is restored for Sequential and Functional submodels only."
            )
    return submodels


def _tie(model, layer_name, keeper):
    """Returns a clone of `model` that calls `keeper` for `layer_name`."""

    def reuse(layer):
        return keeper if layer.name == layer_name else layer

    try:
        clone = keras.models.clone_model(model, clone_function=reuse, recursive=True)
    except Exception:  # Subclassed models cannot be rewired: say so above.
        return model
    clone.name = model.name
    return clone


def _find_layer(model, layer_name):
    for layer in model._flatten_layers(include_self=False):
        if layer.name == layer_name:
            return layer
    return None
