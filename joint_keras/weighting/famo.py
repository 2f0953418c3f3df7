"""`FAMO`: fast adaptive multitask optimization (Liu et al.)."""

import keras
from keras import ops

from joint_keras._compile.checks import check_number
from joint_keras.weighting.base import Weighting

EPSILON = 1e-8  # added to the losses, as in the authors' code
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


@keras.saving.register_keras_serializable(package="joint_keras")
class FAMO(Weighting):
    """Weights the tasks so that their losses decrease at the same rate.

    With logits `xi` and `z = softmax(xi)`, the objective is
    `sum_k z_k log(L_k) / c`, `c = sum_k z_k / L_k` (so the weight of
    `L_k` is `z_k / (c L_k)`, times the compiled weight): its gradient step
    decreases every `log L_k` by about the same amount. `xi` learns from
    how much each `log L_k` actually went down:
    `delta_k = log L_k(before) - log L_k(after)`, and `xi` takes a step on
    the gradient `z * (delta - z . delta) + gamma * xi` (`z`'s Jacobian
    applied to `delta`, plus the decay): a task that improved more loses
    weight. The paper's Algorithm 1 writes a plain gradient step; its code
    (and LibMTL's) takes it with Adam (`learning_rate`, L2 decay `gamma`,
    betas (0.9, 0.999), epsilon 1e-8, PyTorch's convention), as here.

    The authors' code evaluates the losses again on the same batch after
    each update, which costs a forward pass; this class uses the next
    step's losses instead (on the next batch): at each training step, `xi` is
    first updated with `delta = log L(previous step) - log L(this step)`
    (a task's previous loss is its loss at the last step it had one;
    different batches, so `delta` is noisier), then this step's weights
    use the new `xi`. The first step only records the losses.
    `L + 1e-8` stands for `L` (as in the authors' code, their `min_losses`
    being 0): losses must be positive, and negative ones count as 0.
    State: `logits`, `previous_losses`, the Adam moments and step counts
    (per task, so that a task absent from a step is left as it was);
    updated in training steps only.

    {{one_update_layouts}}

    References:
        Liu, Feng, Stone, Liu. FAMO: Fast Adaptive Multitask
        Optimization. NeurIPS 2023.

    Args:
        gamma: Non-negative finite float, the logits' decay. Defaults to 0.01
            (the authors' default; their scripts use 0.001 on several
            benchmarks, LibMTL's default).
        learning_rate: Positive finite float, Adam's step size for the
            logits. Defaults to 0.025 (the authors' and LibMTL's).
    """

    weighs_tasks_together = True

    def __init__(self, gamma=0.01, learning_rate=0.025, **kwargs):
        super().__init__(**kwargs)
        owner = "jk.weighting.FAMO"
        self.gamma = check_number(gamma, "gamma", owner, minimum=0)
        self.learning_rate = check_number(
            learning_rate, "learning_rate", owner, minimum=0, exclusive_minimum=True
        )

    def build_state(self, num_tasks):
        for name in ("logits", "previous_losses", "moment", "second_moment", "steps"):
            variable = self.add_weight(
                shape=(num_tasks,), initializer="zeros", trainable=False, name=name
            )
            setattr(self, name, variable)

    def step_weights(self, losses, indices, training):
        loss = ops.maximum(ops.cast(losses, "float32"), 0.0) + EPSILON
        xi = self.gather(self.logits, indices)
        if training:
            previous = self.gather(self.previous_losses, indices)
            seen = previous > 0.0
            delta = ops.where(seen, ops.log(ops.where(seen, previous, 1.0)), 0.0)
            delta = ops.where(seen, delta - ops.log(loss), 0.0)
            z = self.softmax(xi)
            grad = z * (delta - ops.sum(z * delta)) + self.gamma * xi
            b1, b2 = ADAM_BETAS
            steps = self.gather(self.steps, indices) + 1.0
            m = b1 * self.gather(self.moment, indices) + (1.0 - b1) * grad
            v = b2 * self.gather(self.second_moment, indices) + (1.0 - b2) * grad**2
            m_hat, v_hat = m / (1.0 - b1**steps), v / (1.0 - b2**steps)
            step = self.learning_rate * m_hat / (ops.sqrt(v_hat) + ADAM_EPSILON)
            # Every new value is computed before any variable is assigned:
            # a gathered variable may alias the variable itself.
            updates = [
                (variable, ops.where(seen, new, self.gather(variable, indices)))
                for variable, new in (
                    (self.logits, xi - step),
                    (self.moment, m),
                    (self.second_moment, v),
                    (self.steps, steps),
                )
            ]
            xi = updates[0][1]
            for variable, new in updates:
                self.scatter(variable, indices, new)
            self.scatter(self.previous_losses, indices, loss)
        z = self.softmax(xi)
        weights = z / (ops.sum(z / loss) * loss)
        return self.gather(self.base_weights, indices) * weights

    def get_config(self):
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "learning_rate": self.learning_rate,
        }
