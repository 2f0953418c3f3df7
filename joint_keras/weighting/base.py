"""`Weighting`: how a `JointModel` turns its task losses into one update."""

from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from joint_keras._compile.checks import check_task_weights
from joint_keras._compile.checks import format_names
from joint_keras.weighting._presence import over_present_tasks

PER_TASK_GRADIENTS = ("auto", "vectorized", "sequential")
# A strategy is run once per pattern of presence of the tasks that may have
# no labelled row in a batch (`2 ** k` runs): at most this many such tasks.
MAX_MAYBE_ABSENT = 6

# The "Layouts:" paragraphs that several strategies share, filled into their
# docstrings (at the placeholder's indentation, 4) as Keras fills
# `{{base_optimizer_keyword_args}}`.
LAYOUTS = {
    "{{gradient_level_layouts}}": """
Layouts: one group of tasks, with update schedules (its state moves
every training step; the schedule gates the model's variables only) and
missing labels (a task whose batch has no labelled row is left out of
that step's combination, as if it had no target). Refused at `compile()`
with joint losses that set `updates=` (and so with `alternate`): it
combines the gradients of the tasks of one update. A step with
non-finite losses or gradients leaves its state as it was.""",
    "{{one_update_layouts}}": """
Layouts: one group of tasks, routed joint losses (`updates=`), update
schedules and missing labels (its weights are over the tasks with a loss
in the step). With `alternate`, every stage must train two or more tasks
(it weighs the tasks of one update against each other; refused at
`compile()` otherwise). A step with non-finite losses leaves its state
as it was.""",
}


class Coefficients(NamedTuple):
    """How a gradient-level strategy combines the per-task gradients `g_k`:
    the shared variables get `sum_k shared[k] g_k`, the others
    `sum_k other[k] g_k`. Each a tensor `(n,)`."""

    shared: object
    other: object


class Weighting(keras.layers.Layer):
    """Base class of the loss-weighting strategies in `jk.weighting`.

    A task is one term of the objective: a submodel's loss or a joint loss.
    `JointModel.compile(weighting=...)` builds the strategy on the task
    names and the compiled weights (`loss_weights`, joint-loss weights),
    kept as the live variable `base_weights` (assignable at any time, e.g.
    by `jk.callbacks.LossWeightScheduler`). Strategies keep all their state
    in Keras variables, so it is saved, restored and resumed with the model
    and threaded through `jax.jit`.

    Loss-level strategies override `step_weights` (and maybe `extra_loss`):
    the objective is `sum_k w_k * L_k + extra_loss`. Gradient-level
    strategies set `gradient_level = True` and override `coefficients`: the
    gradient on shared variables is `sum_k a_k * grad L_k`, with `a`
    computed from the Gram matrix of the per-task gradients.

    By default a gradient-level strategy works on the gradients of the
    variables that several submodels share (one backward pass per task
    through the shared layers, vectorized). With `representation="trunk"`
    it works on the gradients with respect to the output of the shared
    layer named `"trunk"` instead, and only that layer's variables get the
    combined update: the tasks' backward passes stop at the representation,
    and one backward pass goes through the trunk, which is much cheaper
    when the trunk is the larger part of the model. Every submodel must
    call that layer on the same input.

    The model calls a strategy through `weights_for_step` and
    `combination`, which hold for every strategy: a task with no labelled
    row in a batch is absent from that step, as if it had no target (the
    strategy runs on the tasks present); a step with non-finite losses or
    gradients leaves the state as it was (counted in `skipped_updates`);
    trainable state of shape `(num_tasks,)` (Uncertainty's) moves, with its
    optimizer moments, only in the entries of the tasks of the step. Each
    strategy's docstring says in which step layouts it works.

    Subclasses create their variables in `build_state(num_tasks)`, keep an
    attribute per constructor argument for `get_config`, and write
    `extra_loss` as a sum of per-task terms.

    Args:
        representation: Optional name of the shared layer (or nested model)
            whose output is the shared representation; gradient-level
            strategies only.
        per_task_gradients: How a gradient-level strategy gets the per-task
            gradients: `"vectorized"` (all tasks' backward passes at once:
            `jax.vmap`, TensorFlow's `pfor`, PyTorch's batched
            `autograd.grad`), `"sequential"` (one backward pass per task
            through the recorded forward pass, as LibMTL does), or
            `"auto"` (the default: whichever measured faster on the
            backend and device, see `benchmarks/weighting_step_time.py`).
            The gradients are the same either way.
        **kwargs: Passed to `keras.layers.Layer` (for example `name`).
    """

    gradient_level = False
    needs_epoch_end = False
    # Whether a step must run the strategy on the tasks present only (see
    # `weights_for_step`); not needed where each task's weight depends on
    # that task alone and a step assigns no state.
    runs_per_presence = True
    # Whether the strategy weighs the tasks of one update against each other
    # (FAMO, RLW): then every `alternate` stage must train two or more.
    weighs_tasks_together = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for placeholder, text in LAYOUTS.items():
            if cls.__doc__:
                text = text.strip().replace("\n", "\n    ")
                cls.__doc__ = cls.__doc__.replace(placeholder, text)

    def __init__(self, representation=None, per_task_gradients="auto", **kwargs):
        kwargs.setdefault("trainable", True)
        super().__init__(**kwargs)
        for arg, value, default in (
            ("representation", representation, None),
            ("per_task_gradients", per_task_gradients, "auto"),
        ):
            if value != default and not self.gradient_level:
                raise ValueError(
                    f"`{arg}` applies to gradient-level strategies; "
                    f"{type(self).__name__} weights losses. Received: "
                    f"{arg}={value!r}"
                )
        if per_task_gradients not in PER_TASK_GRADIENTS:
            raise ValueError(
                f"`per_task_gradients` must be one of {PER_TASK_GRADIENTS}. "
                f"Received: per_task_gradients={per_task_gradients!r}"
            )
        self.representation = representation
        self.per_task_gradients = per_task_gradients
        self.task_names = []

    def build_for_tasks(self, task_names, base_weights):
        """Creates the variables for `task_names` (called by `compile`). A
        strategy compiled again keeps its state and takes the new weights."""
        if self.built:
            if list(task_names) != self.task_names:
                raise ValueError(
                    f"The weighting strategy {self.name!r} was built for the "
                    f"tasks {self.task_names}, not {list(task_names)}. Pass a "
                    "new instance."
                )
            self.base_weights.assign(np.array(base_weights, "float32"))
            return
        self.task_names = list(task_names)
        num_tasks = len(self.task_names)
        self.base_weights = self.add_weight(
            shape=(num_tasks,),
            initializer=(
                keras.initializers.Constant(list(base_weights))
                if num_tasks
                else "zeros"
            ),
            trainable=False,
            name="base_weights",
        )
        # Training steps whose non-finite losses or gradients left the state
        # as it was (reported by `jk.callbacks` at the end of each epoch).
        self.skipped_updates = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="skipped_updates"
        )
        self.build_state(num_tasks)
        self.built = True

    def build_state(self, num_tasks):
        """Override to create the strategy's variables."""

    def current_weights(self):
        """Dict task name -> current base weight (a float)."""
        values = ops.convert_to_numpy(ops.convert_to_tensor(self.base_weights))
        return {name: float(v) for name, v in zip(self.task_names, values)}

    def assign_task_weights(self, weights):
        """Sets the base weights of the tasks in the dict `weights`, checked
        as `compile()` checks `loss_weights`."""
        new = {**self.current_weights(), **check_task_weights(weights, self.task_names)}
        self.base_weights.assign(
            np.array([new[name] for name in self.task_names], "float32")
        )

    def add_weight(self, *args, trainable=True, aggregation=None, **kwargs):
        # State that the step writes is computed from global-batch values,
        # the same on every replica: under `tf.distribute`, keep the first
        # replica's write.
        if aggregation is None:
            aggregation = "none" if trainable else "only_first_replica"
        return super().add_weight(
            *args, trainable=trainable, aggregation=aggregation, **kwargs
        )

    def state_variables(self):
        """The variables a step may assign (the strategy's own state)."""
        fixed = {id(self.base_weights), id(self.skipped_updates)}
        return [v for v in self.non_trainable_variables if id(v) not in fixed]

    def weights_for_step(self, losses, indices, training, present=None, flagged=()):
        """`step_weights` of the tasks present in this step: what the model
        calls. A task absent from the step (no labelled row in its batch) is
        left out, as if the batch had no target for it; a step with a
        non-finite loss leaves the state as it was, and is counted in
        `skipped_updates`.

        Args:
            losses, indices, training: As in `step_weights`.
            present: Boolean tensor `(n,)`, which tasks have a labelled
                row, or `None` when all have.
            flagged: Python tuple of the positions (in `indices`) of the
                tasks that may have none.

        Returns:
            Tensor `(n,)` of effective weights (the compiled weight where a
            task is absent: its loss is 0 there).
        """
        if self.runs_per_presence:
            self._check_flagged(indices, flagged)
        finite = ops.all(ops.isfinite(losses))
        if training:
            self.skipped_updates.assign_add(
                ops.cast(ops.logical_not(finite), self.skipped_updates.dtype)
            )
        base = self.gather(self.base_weights, indices)

        def weigh(sub):
            weights = self.step_weights(
                _take(losses, sub), [indices[i] for i in sub], training
            )
            return (weights,), ()

        if not self.runs_per_presence:
            flagged = ()
        (weights,), _ = over_present_tasks(
            weigh,
            len(indices),
            present,
            flagged,
            (base,),
            self.state_variables(),
            finite,
        )
        return weights

    def combination(self, gram, jacobians, losses, indices, present=None, flagged=()):
        """This training step's gradient combination, for the tasks present
        (see `weights_for_step`); a non-finite Gram matrix or loss leaves the
        state as it was.

        Args:
            gram: Tensor `(n, n)`, the Gram matrix of the per-task
                gradients (rows of absent tasks are zero).
            jacobians: List of tensors `(n, *shape)`, the per-task
                gradients on each shared tensor.
            losses, indices: As in `step_weights`.
            present, flagged: As in `weights_for_step`.

        Returns:
            `(updates, shared, other)`: the update on each shared tensor
            (`None` when it is `sum_k shared[k] g_k`), and the coefficients
            `(n,)` of the task gradients on the shared and other variables
            (`shared` is `None` with `updates`).
        """
        self._check_flagged(indices, flagged)
        finite = ops.logical_and(
            ops.all(ops.isfinite(gram)), ops.all(ops.isfinite(losses))
        )
        # The solvers get a finite matrix (TensorFlow's inverse raises on a
        # NaN); the step's state is put back anyway.
        gram = ops.where(finite, gram, ops.zeros_like(gram))
        zeros = ops.zeros((len(indices),), "float32")

        def combine(sub):
            sub_losses, sub_indices = _take(losses, sub), [indices[i] for i in sub]
            combined = self.combine(
                [_take(j, sub) for j in jacobians], sub_losses, sub_indices, True
            )
            if combined is not None:
                updates, other = combined
                return (zeros[: len(sub)], other), tuple(updates)
            sub_gram = _take(_take(gram, sub), sub, axis=1)
            shared, other = self.coefficients(sub_gram, sub_losses, sub_indices, True)
            return (shared, other), (None,) * len(jacobians)

        (shared, other), updates = over_present_tasks(
            combine,
            len(indices),
            present,
            flagged,
            (zeros, zeros),
            self.state_variables(),
            finite,
        )
        if updates and updates[0] is not None:
            return list(updates), None, other
        return None, shared, other

    def _check_flagged(self, indices, flagged):
        if len(flagged) > MAX_MAYBE_ABSENT:
            names = [self.task_names[indices[i]] for i in flagged]
            raise ValueError(
                f"The weighting strategy {self.name!r} is run once per pattern "
                "of the tasks that may have no labelled row in a batch (missing "
                f"labels), for up to {MAX_MAYBE_ABSENT} such tasks; "
                f"{len(flagged)} may here: {format_names(names)}. Label every "
                "row of some of them, or use `weighting=None`."
            )

    def step_weights(self, losses, indices, training):
        """Effective weight of each task with a loss in this step.

        Args:
            losses: Tensor `(n,)` of the loss values of the tasks at
                `indices`, with no gradient.
            indices: Python list of the positions (in `task_names`) of the
                `n` tasks that have a loss this step (a submodel without
                targets has none).
            training: Python bool; state is updated only when true.

        Returns:
            Tensor `(n,)`. It may carry gradient to trainable strategy
            variables (as in `Uncertainty`).
        """
        return self.gather(self.base_weights, indices)

    def extra_loss(self, indices):
        """A term added to the objective (a regularizer), or None."""
        return None

    def coefficients(self, gram, losses, indices, training):
        """Gradient-level strategies: how to combine per-task gradients.

        Args:
            gram: Tensor `(n, n)`, the Gram matrix `G G^T` of the per-task
                gradients `G` on the shared variables, each task's loss
                scaled by its base weight.
            losses: As in `step_weights`.
            indices: As in `step_weights`.
            training: As in `step_weights`.

        Returns:
            A `Coefficients(shared, other)` of tensors `(n,)`: the shared
            variables get `sum_k shared[k] g_k`, the other variables
            `sum_k other[k] g_k`.
        """
        raise NotImplementedError

    def combine(self, jacobians, losses, indices, training):
        """Gradient-level strategies that need the per-task gradients
        themselves, not only their Gram matrix (GradDrop), override this.

        Args:
            jacobians: List of tensors `(n, *shape)`, the per-task gradients
                on each shared variable (or the representation).
            losses, indices, training: As in `step_weights`.

        Returns:
            `None` (the default: `coefficients` is used), or a tuple
            `(updates, other)`: the update direction on each shared tensor
            (a list like `jacobians`, without the task axis) and the
            coefficients `(n,)` of the task gradients on the other
            variables.
        """
        return None

    @staticmethod
    def gather(variable, indices):
        """The entries of a `(num_tasks,)` variable at `indices`.

        A product with a one-hot matrix rather than a gather: a gather's
        gradient on TensorFlow is sparse, and two gathers of one variable
        give duplicate indices, which Keras's Adam squares entry by entry.
        """
        values = ops.convert_to_tensor(variable)
        if list(indices) == list(range(values.shape[0])):
            return values
        selection = ops.one_hot(ops.array(indices), values.shape[0], dtype=values.dtype)
        return ops.matmul(selection, values)

    @staticmethod
    def softmax(values):
        """`ops.softmax` of a vector; `[1.0]` for one entry (Keras warns on an
        axis of size 1: one task alone in a step, missing labels)."""
        if values.shape[0] == 1:
            return ops.ones_like(values)
        return ops.softmax(values)

    @staticmethod
    def scatter(variable, indices, values):
        """Assigns `values` to the entries of `variable` at `indices`."""
        variable.assign(
            ops.scatter_update(
                ops.convert_to_tensor(variable),
                ops.expand_dims(ops.array(indices), -1),
                ops.cast(values, variable.dtype),
            )
        )

    def on_epoch_end(self):
        """Called after every training epoch when `needs_epoch_end`."""

    def get_config(self):
        config = super().get_config()
        for key in ("trainable", "dtype"):
            config.pop(key, None)
        if self.representation is not None:
            config["representation"] = self.representation
        if self.per_task_gradients != "auto":
            config["per_task_gradients"] = self.per_task_gradients
        return config


def _take(values, positions, axis=0):
    """The entries of `values` at the Python list `positions` along `axis`."""
    if values is None or list(positions) == list(range(values.shape[axis])):
        return values
    return ops.take(values, ops.array(positions), axis=axis)
