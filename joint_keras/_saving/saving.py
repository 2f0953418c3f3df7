"""Saving a joint model: atomic files, submodels matched by name, the state
Keras leaves out (random-seed state), and the compile arguments as given."""

import json
import os
import uuid
import zipfile

import keras
import numpy as np

_NAMES_KEY = "submodel_names"


class SavingMixin:
    """`JointModel`'s saving methods: Keras's, made atomic, with submodels
    matched by name and the compile arguments stored as given."""

    def save(self, filepath, overwrite=True, **kwargs):
        """As `keras.Model.save`, but atomic: written beside the target,
        flushed and renamed over it, so that a process killed at any
        instant leaves the previous file whole."""
        write = lambda path: keras.Model.save(self, path, **kwargs)  # noqa: E731
        atomic_write(filepath, overwrite, write)

    def save_weights(self, filepath, overwrite=True, **kwargs):
        """As `keras.Model.save_weights`, but atomic (see `save`); the file
        records the submodel names, for `load_weights`."""
        write = lambda path: keras.Model.save_weights(self, path, **kwargs)  # noqa: E731
        atomic_write(filepath, overwrite, write)

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """As `keras.Model.load_weights`, matching submodels by name, in any
        order. Raises `ValueError` for a file with other submodel names."""
        load_weights_by_name(self, filepath, skip_mismatch, **kwargs)

    def save_own_variables(self, store):  # The state Keras leaves out.
        save_own_state(self, store)

    def load_own_variables(self, store):
        load_own_state(self, store)

    def get_compile_config(self):
        if not self.compiled or self._spec is None:
            return {}
        return compile_config(self._compile_args, self.optimizer)

    def compile_from_config(self, config):
        self.compile(**deserialize_compile_config(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)


_SEED_PREFIX = "seed_state_"


def atomic_write(filepath, overwrite, write):
    """Calls `write(path)` on a temporary file beside `filepath`, flushes it
    to disk, then renames it over `filepath`: a process killed at any
    instant leaves either the previous file or the new one, never a partial
    one. (Keras opens the target itself and overwrites it in place.)"""
    filepath = os.fspath(filepath)
    if "://" in filepath:  # A remote path: Keras's own file handling.
        write(filepath)
        return
    if not overwrite and os.path.exists(filepath):
        answer = input(f"[WARNING] {filepath} already exists - overwrite? [y/n]")
        if answer.strip().lower() not in ("y", "yes"):
            return
    directory, base = os.path.split(os.path.abspath(filepath))
    # Same directory (so the rename is atomic) and same suffix (Keras checks
    # `.keras` / `.weights.h5`).
    temporary = os.path.join(directory, f".tmp-{uuid.uuid4().hex[:12]}-{base}")
    try:
        write(temporary)
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, filepath)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:  # Not every platform opens directories.
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def atomic_copy(source, target):
    """Copies `source` over `target` atomically."""
    import shutil

    atomic_write(target, True, lambda path: shutil.copyfile(source, path))


def save_own_state(model, store):
    """What a joint model writes itself into a weights file (its root
    entry): its submodel names, and the state of every random-seed
    generator (dropout's), which Keras's weights files leave out, so that a
    run resumed from the file draws the same random numbers."""
    store[_NAMES_KEY] = _encode(sorted(model.submodels))
    for i, state in enumerate(seed_states(model)):
        store[f"{_SEED_PREFIX}{i}"] = state


def load_own_state(model, store):
    if store is None or _NAMES_KEY not in store.keys():
        return
    check_names(model, _decode(store[_NAMES_KEY]))
    states = seed_states(model)
    saved = [key for key in store.keys() if key.startswith(_SEED_PREFIX)]
    # Restored only when the file and the model have the same generators
    # (a model compiled with another strategy may have more or fewer).
    if len(saved) == len(states):
        for i, state in enumerate(states):
            state.assign(np.asarray(store[f"{_SEED_PREFIX}{i}"]))


def seed_states(model):
    """The random-seed state variables of `model`: its variables that are
    neither weights nor metrics, in tracking order."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def check_names(model, saved):
    names = sorted(model.submodels)
    if sorted(saved) != names:
        raise ValueError(
            "The weights file was saved from a joint model with other "
            f"submodels: it has {sorted(saved)}, this model has {names}. "
            "Submodels are matched by name (in any order); the names must "
            "be the same."
        )


def saved_names(filepath):
    """The submodel names recorded in a weights or `.keras` file, or `None`
    for a file without them."""
    filepath = os.fspath(filepath)
    import h5py

    if filepath.endswith(".keras"):
        with zipfile.ZipFile(filepath) as archive:
            if "model.weights.h5" not in archive.namelist():
                return None
            with archive.open("model.weights.h5") as f, h5py.File(f, "r") as h5:
                return _names_in(h5)
    if filepath.endswith(".weights.h5") and os.path.exists(filepath):
        with h5py.File(filepath, "r") as h5:
            return _names_in(h5)
    return None


def _names_in(h5):
    root = h5.get("vars")
    if root is None or _NAMES_KEY not in root:
        return None
    return _decode(root[_NAMES_KEY][()])


def _encode(names):
    return np.frombuffer(json.dumps(list(names)).encode("utf-8"), dtype="uint8")


def _decode(array):
    return json.loads(bytes(np.asarray(array, dtype="uint8")).decode("utf-8"))


def load_weights_by_name(model, filepath, skip_mismatch=False, **kwargs):
    """Checks the file's submodel names before Keras loads anything (so a
    mismatch leaves the model untouched), then loads."""
    names = saved_names(filepath)
    if names is not None:
        check_names(model, names)
    keras.Model.load_weights(model, filepath, skip_mismatch=skip_mismatch, **kwargs)


COMPILE_ARGUMENTS = (
    "optimizer",
    "loss",
    "loss_weights",
    "metrics",
    "weighted_metrics",
    "run_eagerly",
    "steps_per_execution",
    "jit_compile",
    "auto_scale_loss",
    "joint_losses",
    "update_every",
    "missing_label",
    "weighting",
    "alternate",
)


def compile_config(arguments, optimizer):
    """The compile arguments, serialized for `get_compile_config`.

    They are the arguments as given, except `optimizer`: the model's, in
    the form `compile()` takes (its inner optimizers by submodel, not the
    `SubmodelOptimizer` built from them), with its current settings. Warns
    when something cannot be deserialized (an unregistered function), since
    loading the file would then fail.
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    optimizer = getattr(optimizer, "submodel_optimizers", optimizer)
    arguments = {**arguments, "optimizer": optimizer}
    config = keras.saving.serialize_keras_object(
        {key: arguments[key] for key in COMPILE_ARGUMENTS}
    )
    _warn_if_not_loadable(config)
    return config


def deserialize_compile_config(config):
    """The compile arguments from `compile_config`; when a function or class
    in them cannot be found, the error says so first, and how to fix it."""
    try:
        return keras.saving.deserialize_keras_object(config)
    except Exception as error:
        raise type(error)(_cause_first(error)) from error


def _cause_first(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = next(
        (line for line in reversed(lines) if "Could not locate" in line),
        lines[-1] if lines else repr(error),
    )
    return (
        f"{cause} A joint model's compile arguments (joint losses, "
        "`update_every` callables, custom losses or metrics) must be "
        "registered to load: decorate them with "
        "`@keras.saving.register_keras_serializable()`, or pass "
        "`custom_objects` to `load_model` (and `safe_mode=False` for "
        f"lambdas).\n\nKeras's message: {error}"
    )


def _warn_if_not_loadable(config):
    import warnings

    try:
        keras.saving.deserialize_keras_object(config)
    except Exception as error:  # What `load_model` would raise.
        warnings.warn(
            "This joint model's compile arguments cannot be deserialized, so "
            "loading the saved file will fail: " + _cause_first(error),
            stacklevel=3,
        )
