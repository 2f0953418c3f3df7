"""Submodels that feed each other: what each submodel takes as input.

`JointModel(submodels, inputs={...})` maps a submodel name to the source of
its input. A source is:

- `jk.INPUT`: the submodel's entry of the joint model's input `x` (the
  default for every submodel not named in `inputs`);
- a submodel name: that submodel's output, computed once per step;
- `jk.Noise(shape)`: fresh random numbers, one row per row of `x`, drawn
  from a seed generator the joint model tracks (so it advances every step
  on every backend and is saved with the model);
- `jk.Concat(source, ...)`: sources concatenated along the batch axis (a
  discriminator fed generated and real samples, as in most GANs);
- a list, tuple or dict of sources: passed in that structure (a submodel
  with several inputs).

Each submodel runs once per forward pass, after the submodels it reads.
"""

import keras
from keras import ops

from joint_keras._compile.checks import format_names


@keras.saving.register_keras_serializable(package="joint_keras")
class InputSource:
    """The source "this submodel's entry of the joint model's input `x`".
    Use the instance `jk.INPUT`."""

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return INPUT

    def __repr__(self):
        return "jk.INPUT"


INPUT = InputSource()


@keras.saving.register_keras_serializable(package="joint_keras")
class Concat:
    """Sources concatenated along an axis (the batch axis by default).

    Args:
        *sources: Two or more sources (submodel names, `jk.INPUT`,
            `jk.Noise(...)`).
        axis: Int. Defaults to 0.

    Example:

    ```python
    latent_dim = 8
    gen = keras.Sequential([keras.Input((latent_dim,)), keras.layers.Dense(2)])
    disc = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    # The discriminator sees generated samples, then real ones.
    gan = jk.JointModel(
        {"gen": gen, "disc": disc},
        inputs={"gen": jk.Noise((latent_dim,)), "disc": jk.Concat("gen", jk.INPUT)},
    )
    ```
    """

    def __init__(self, *sources, axis=0):
        if len(sources) < 2:
            raise ValueError(
                f"`jk.Concat` needs two or more sources. Received: {sources!r}"
            )
        self.sources = list(sources)
        self.axis = axis

    def get_config(self):
        return {
            "sources": [keras.saving.serialize_keras_object(s) for s in self.sources],
            "axis": self.axis,
        }

    @classmethod
    def from_config(cls, config):
        sources = [keras.saving.deserialize_keras_object(s) for s in config["sources"]]
        return cls(*sources, axis=config["axis"])

    def __repr__(self):
        return f"jk.Concat({', '.join(map(repr, self.sources))}, axis={self.axis})"


@keras.saving.register_keras_serializable(package="joint_keras")
class Noise:
    """Random numbers of shape `(rows of x,) + shape`, new at every forward
    pass (a generator's latent input).

    The joint model tracks the seed generator, so the draws advance on every
    backend (JAX included) and resume where they were after loading.

    Args:
        shape: Tuple, the shape of one sample.
        distribution: `"normal"` (default) or `"uniform"` (in [0, 1)).
        seed: Optional int.

    Example:

    ```python
    gen = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    model = jk.JointModel({"gen": gen}, inputs={"gen": jk.Noise((8,), seed=1)})
    samples = model.predict(np.zeros((5, 1)), verbose=0)  # x sets the rows only
    samples["gen"].shape  # (5, 2)
    ```
    """

    def __init__(self, shape, distribution="normal", seed=None):
        if distribution not in ("normal", "uniform"):
            raise ValueError(
                "`distribution` must be 'normal' or 'uniform'. "
                f"Received: distribution={distribution!r}"
            )
        self.shape = _check_shape(shape)
        self.distribution = distribution
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(
                f"`jk.Noise` takes an int `seed`, or None. Received: seed={seed!r}"
            )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def draw(self, rows):
        shape = (rows,) + self.shape
        if self.distribution == "uniform":
            return keras.random.uniform(shape, seed=self.seed_generator)
        return keras.random.normal(shape, seed=self.seed_generator)

    def get_config(self):
        return {
            "shape": list(self.shape),
            "distribution": self.distribution,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"jk.Noise({self.shape}, {self.distribution!r})"


@keras.saving.register_keras_serializable(package="joint_keras")
class Output:
    """One output of a submodel with several, as a source.

    Args:
        submodel: Name of the submodel.
        output: Which output: its position (an int) or its name (the name of
            a functional model's output layer, or its key when the model
            returns a dict).

    Example:

    ```python
    inputs = keras.Input((8,))
    features = keras.layers.Dense(16, "relu", name="features")(inputs)
    logits = keras.layers.Dense(3, name="logits")(features)
    trunk = keras.Model(inputs, [features, logits])
    head = keras.Sequential([keras.Input((16,)), keras.layers.Dense(1)])
    # "trunk" returns [features, logits]; the head reads the features.
    model = jk.JointModel(
        {"trunk": trunk, "head": head},
        inputs={"head": jk.Output("trunk", "features")},
    )
    ```
    """

    def __init__(self, submodel, output):
        if not isinstance(submodel, str):
            raise TypeError(
                "`jk.Output` takes the submodel's name first. Received: "
                f"submodel={submodel!r} of type {type(submodel).__name__}"
            )
        if isinstance(output, bool) or not isinstance(output, (int, str)):
            raise TypeError(
                "`jk.Output` picks an output by position (an int) or name (a "
                f"string). Received: output={output!r} of type "
                f"{type(output).__name__}"
            )
        if isinstance(output, int) and output < 0:
            raise ValueError(
                f"`jk.Output` positions start at 0. Received: output={output!r}"
            )
        self.submodel = submodel
        self.output = output

    def get_config(self):
        return {"submodel": self.submodel, "output": self.output}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"jk.Output({self.submodel!r}, {self.output!r})"


class SubmodelGraph:
    """Which source feeds each submodel, and the order to run them in.

    Args:
        names: Submodel names, in submodel order.
        inputs: Optional dict name -> source (see the module docstring).

    Raises:
        ValueError, TypeError: for a key or source naming no submodel, a
            cycle, or a source that is not one of the kinds above.
    """

    def __init__(self, names, inputs=None):
        if inputs is not None and not isinstance(inputs, dict):
            raise TypeError(
                "`inputs` must be a dict mapping a submodel name to its source "
                "(a submodel name, `jk.INPUT`, `jk.Noise(...)`, `jk.Output(...)`, "
                f"`jk.Concat(...)`). Received: inputs={inputs!r} of type "
                f"{type(inputs).__name__}"
            )
        inputs = dict(inputs or {})
        unknown = [k for k in inputs if k not in names]
        if unknown:
            raise ValueError(
                f"`inputs` has keys that name no submodel: {format_names(unknown)}."
                f" Submodels are {format_names(names)}."
            )
        self.names = list(names)
        self.sources = {name: inputs.get(name, INPUT) for name in names}
        self.reads = {
            name: _read_names(source, name, names)
            for name, source in self.sources.items()
        }
        self.order = _dependency_order(self.names, self.reads)
        self.takes_input = [
            n for n in self.names if _contains(self.sources[n], InputSource)
        ]
        self.noises = [
            noise for n in self.names for noise in _collect(self.sources[n], Noise)
        ]
        self.given = inputs
        # Flat functional models of the whole graph, by input form (below).
        self.fused = {}
        # Each submodel's output names, where declared (`check_outputs`).
        self.output_names = {}

    @property
    def is_trivial(self):
        """Whether every submodel takes the joint model's input."""
        return not self.given

    def ancestors(self, name):
        """The submodels whose outputs flow into `name`, transitively."""
        found, todo = set(), list(self.reads[name])
        while todo:
            current = todo.pop()
            if current not in found:
                found.add(current)
                todo.extend(self.reads[current])
        return found

    def run(self, submodels, routed, rows, training, probes=None, hint=str):
        """Every submodel's output, each computed once.

        Args:
            submodels: Dict name -> model.
            routed: Dict name -> the submodel's entry of `x`, for the
                submodels that take one.
            rows: The batch size (for `jk.Noise`).
            training: Python bool or `None`.
            probes: Optional dict name -> tensor added to that submodel's
                output (to differentiate with respect to it).
            hint: Callable `hint(name) -> str` adding to the error raised
                when submodel `name` cannot be called on its input.

        Returns:
            `(outputs, before_probes)`: dicts name -> output, in submodel
            order; `before_probes` holds the probed outputs without probes.
        """
        outputs, before = {}, {}
        for name in self.order:
            value = self._resolve(self.sources[name], name, routed, outputs, rows)
            model = submodels[name]
            try:
                # A frozen submodel (a distillation teacher) runs in
                # inference mode, as in `keras.distillation.Distiller`.
                output = model(value, training=training if model.trainable else False)
            except ValueError as error:
                raise ValueError(
                    f"Submodel {name!r} could not be called on its input."
                    f"{hint(name)}\n{error}"
                ) from error
            if probes and name in probes:
                before[name] = output
                output = output + probes[name]
            outputs[name] = output
        return {name: outputs[name] for name in self.names}, before

    def fuse(self, submodels, shared):
        """One flat functional model computing every submodel's output, or
        `None` when the graph cannot be flattened.

        Calling each submodel is a model call, whose overhead counts in
        eager PyTorch; this model calls the submodels' layers directly, in
        one functional pass. It takes the input `x` itself when `shared`,
        else the dict of the submodels' entries. Only functional and
        `Sequential` submodels with declared inputs, all trainable (a frozen
        submodel runs in inference mode), and no `jk.Noise` can be flattened.

        Args:
            submodels: Dict name -> model.
            shared: Bool, whether every submodel taking `x` takes all of it.
        """
        if shared in self.fused:
            return self.fused[shared]
        self.fused[shared] = None
        if self.noises or not all(
            m.trainable and _declared_input(m) is not None for m in submodels.values()
        ):
            return None
        try:
            first = submodels[self.takes_input[0]] if self.takes_input else None
            if shared:
                inputs = _inputs_like(_declared_input(first), "input")
                routed = {name: inputs for name in self.takes_input}
            else:
                routed = {
                    n: _inputs_like(_declared_input(submodels[n]), n)
                    for n in self.takes_input
                }
                inputs = routed
            outputs = {}
            for name in self.order:
                value = self._resolve(self.sources[name], name, routed, outputs, None)
                outputs[name] = submodels[name].call(value)
            ordered = {name: outputs[name] for name in self.names}
            self.fused[shared] = keras.Model(inputs, ordered)
        except Exception:  # Not flattenable: submodels run one by one.
            self.fused[shared] = None
        return self.fused[shared]

    def output_specs(self, submodels, routed):
        """Every submodel's output as a `KerasTensor`, from the symbolic
        entries of `x` in `routed`, by shape inference only (no variable is
        read: it works inside a JAX step)."""
        outputs = {}
        for name in self.order:
            value = self._resolve(self.sources[name], name, routed, outputs, None)
            outputs[name] = submodels[name].compute_output_spec(value)
        return outputs

    def check_outputs(self, submodels):
        """Raises unless every source that reads a submodel with several
        outputs picks one (`jk.Output`) or passes them all to a submodel
        that takes as many inputs; checks each `jk.Output` against the
        outputs it picks from, where the submodels declare them."""
        self.output_names = {n: _output_names(m) for n, m in submodels.items()}
        for name in self.names:
            source = self.sources[name]
            for output in _collect(source, Output):
                structure = _declared_output(submodels[output.submodel])
                if structure is not None:
                    names = self.output_names[output.submodel]
                    _pick(structure, output, name, names)
            takes = _declared_input(submodels[name])
            for read in _bare_names(source):
                names = self.output_names[read]
                if names is None:  # One output, or not declared.
                    continue
                count = len(keras.tree.flatten(takes)) if takes is not None else 0
                if source == read and count == len(names):
                    continue
                raise ValueError(
                    f"`inputs[{name!r}]` reads {read!r}, which has "
                    f"{len(names)} outputs ({names}); pick one with "
                    f"`jk.Output({read!r}, {names[0]!r})` (or by position, "
                    f"`jk.Output({read!r}, 0)`)."
                )

    def input_part(self, name, declared):
        """The part of submodel `name`'s declared inputs (`declared`, a
        structure like its source) that its entry of `x` feeds."""
        parts = _input_parts(self.sources[name], declared)
        if not parts:
            raise ValueError(
                f"Cannot tell which of submodel {name!r}'s inputs its entry of "
                f"`x` feeds (`inputs[{name!r}]={self.sources[name]!r}`); pass "
                "`input_signature` to `export()`."
            )
        return parts[0]

    def _resolve(self, source, name, routed, outputs, rows):
        if isinstance(source, InputSource):
            return routed[name]
        if isinstance(source, str):
            return outputs[source]
        if isinstance(source, Noise) and rows is None:  # Shape inference.
            return keras.KerasTensor((None,) + source.shape)
        if isinstance(source, Noise):
            return source.draw(rows)
        if isinstance(source, Output):
            names = self.output_names.get(source.submodel)
            return _pick(outputs[source.submodel], source, name, names)
        if isinstance(source, Concat):
            parts = [
                self._resolve(s, name, routed, outputs, rows) for s in source.sources
            ]
            _check_concatenable(parts, source, name)
            return ops.concatenate(parts, axis=source.axis)
        if isinstance(source, dict):
            return {
                k: self._resolve(s, name, routed, outputs, rows)
                for k, s in source.items()
            }
        return type(source)(
            self._resolve(s, name, routed, outputs, rows) for s in source
        )

    def get_config(self):
        return {
            name: keras.saving.serialize_keras_object(source)
            for name, source in self.given.items()
        }


def _input_parts(source, declared):
    """The parts of `declared` that `jk.INPUT` feeds in `source`."""
    if isinstance(source, InputSource):
        return [declared]
    if isinstance(source, Concat):
        direct = any(isinstance(s, InputSource) for s in source.sources)
        return [declared] if direct and source.axis == 0 else []
    if isinstance(source, dict) and isinstance(declared, dict):
        keys = [k for k in source if k in declared]
        return [p for k in keys for p in _input_parts(source[k], declared[k])]
    if isinstance(source, (list, tuple)) and isinstance(declared, (list, tuple)):
        pairs = zip(source, declared)
        return [p for s, d in pairs for p in _input_parts(s, d)]
    return []


def _declared_input(model):
    """A functional or `Sequential` model's input tensor(s), or `None`."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    return inputs[0] if len(inputs) == 1 else list(inputs)


def _inputs_like(structure, name):
    """New `keras.Input`s like the tensors in `structure`, each named after
    its path (from `name`, or its key in a dict of inputs, as `keras.Model`
    wants a dict's tensors named)."""
    prefix = [] if isinstance(structure, dict) else [name]
    new = [
        keras.Input(
            shape=t.shape[1:],
            dtype=t.dtype,
            name="_".join(prefix + list(map(str, path))),
        )
        for path, t in keras.tree.flatten_with_path(structure)
    ]
    return keras.tree.pack_sequence_as(structure, new)


def _read_names(source, owner, names):
    """The submodel names `source` reads."""
    if isinstance(source, (InputSource, Noise)):
        return []
    if isinstance(source, str):
        if source not in names:
            raise ValueError(
                f"`inputs[{owner!r}]` reads {source!r}, which names no "
                f"submodel. Submodels are {format_names(names)}."
            )
        if source == owner:
            raise ValueError(f"`inputs[{owner!r}]` reads its own output.")
        return [source]
    if isinstance(source, Output):
        return _read_names(source.submodel, owner, names)
    if isinstance(source, Concat):
        return [n for s in source.sources for n in _read_names(s, owner, names)]
    if isinstance(source, dict):
        return [n for s in source.values() for n in _read_names(s, owner, names)]
    if isinstance(source, (list, tuple)):
        return [n for s in source for n in _read_names(s, owner, names)]
    raise TypeError(
        f"`inputs[{owner!r}]` must be a submodel name, `jk.INPUT`, "
        "`jk.Noise(...)`, `jk.Output(...)`, `jk.Concat(...)`, or a list or "
        "dict of these. "
        f"Received: {source!r} of type {type(source).__name__}"
    )


def _dependency_order(names, reads):
    """The names, each after those it reads (submodel order otherwise)."""
    order, state = [], {}

    def visit(name, path):
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = path[path.index(name) :] + [name]
            raise ValueError(
                "`inputs` has a cycle: " + " -> ".join(map(repr, cycle)) + "."
            )
        state[name] = "visiting"
        for source in reads[name]:
            visit(source, path + [name])
        state[name] = "done"
        order.append(name)

    for name in names:
        visit(name, [])
    return order


def _contains(source, kind):
    return bool(_collect(source, kind))


def _collect(source, kind):
    if isinstance(source, kind):
        return [source]
    if isinstance(source, Concat):
        return [x for s in source.sources for x in _collect(s, kind)]
    if isinstance(source, dict):
        return [x for s in source.values() for x in _collect(s, kind)]
    if isinstance(source, (list, tuple)) and not isinstance(source, str):
        return [x for s in source for x in _collect(s, kind)]
    return []


def _check_shape(shape):
    """`shape` as a tuple of positive ints (`jk.Noise`'s sample shape)."""
    if isinstance(shape, (list, tuple)) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        if all(d > 0 for d in shape):
            return tuple(shape)
        raise ValueError(
            "`jk.Noise` takes the shape of one sample, positive sizes. "
            f"Received: shape={shape!r}"
        )
    raise TypeError(
        "`jk.Noise` takes the shape of one sample as a tuple of ints, e.g. "
        f"`jk.Noise((4,))`. Received: shape={shape!r} of type {type(shape).__name__}"
    )


def _declared_output(model):
    """A functional or `Sequential` model's output structure, or `None`."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs or len(outputs) == 1:
        return outputs[0] if outputs else None
    try:
        return model.output  # A functional model's structure (list or dict).
    except (AttributeError, ValueError):
        return list(outputs)


def _output_names(model):
    """The names of a model's outputs: the keys of its output dict, or its
    output layers' names (`output_names`), or `None` when unknown."""
    structure = _declared_output(model)
    if isinstance(structure, dict):
        return list(structure)
    if isinstance(structure, (list, tuple)):
        return list(getattr(model, "output_names", None) or range(len(structure)))
    return None


def _bare_names(source):
    """The submodel names `source` reads whole (not through `jk.Output`)."""
    if isinstance(source, str):
        return [source]
    if isinstance(source, Concat):
        return [n for s in source.sources for n in _bare_names(s)]
    if isinstance(source, dict):
        return [n for s in source.values() for n in _bare_names(s)]
    if isinstance(source, (list, tuple)):
        return [n for s in source for n in _bare_names(s)]
    return []


def _pick(value, source, reader, names):
    """The output of `value` (a submodel's outputs, named `names`) that
    `source` picks."""
    picked = source.output
    if isinstance(value, dict):
        if picked in value:
            return value[picked]
    elif isinstance(value, (list, tuple)):
        if isinstance(picked, str) and names and picked in names:
            picked = names.index(picked)
        if isinstance(picked, int) and picked < len(value):
            return value[picked]
    else:
        raise ValueError(
            f"`inputs[{reader!r}]` picks output {source.output!r} of "
            f"{source.submodel!r}, which has one output: read it as "
            f"{source.submodel!r}."
        )
    raise ValueError(
        f"`inputs[{reader!r}]` picks output {source.output!r} of "
        f"{source.submodel!r}, whose outputs are {names} (by name, or, when it "
        "returns a list, by position from 0)."
    )


def _check_concatenable(parts, source, name):
    """Raises unless `parts` agree in rank and in every size but the axis's."""
    shapes = [tuple(p.shape) for p in parts]
    ranks = {len(shape) for shape in shapes}
    axis = source.axis % max(ranks)
    compatible = len(ranks) == 1 and all(
        len({d for d in sizes if d is not None}) <= 1
        for i, sizes in enumerate(zip(*shapes))
        if i != axis
    )
    if not compatible:
        raise ValueError(
            f"`inputs[{name!r}]` concatenates {source.sources!r} along axis "
            f"{source.axis}, but their shapes {shapes} differ in another axis "
            "(or in rank)."
        )
