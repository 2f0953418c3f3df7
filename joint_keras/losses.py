"""Built-in joint losses: terms that need several submodels' outputs.

Each is a `jk.JointLoss`: pass it in `compile(joint_losses=[...])`.
Classifier outputs may be probabilities (the default, as a softmax layer
gives) or logits (`from_logits=True`).
"""

import keras
from keras import ops

from joint_keras.joint_loss import JointLoss


def _log_probs(outputs, temperature, from_logits):
    logits = outputs if from_logits else ops.log(ops.clip(outputs, 1e-7, 1.0))
    return ops.log_softmax(logits / temperature, axis=-1)


def _kl(target_log_probs, log_probs):
    """Mean over the batch of KL(target || predicted), from log-probs."""
    target = ops.exp(target_log_probs)
    return ops.mean(ops.sum(target * (target_log_probs - log_probs), axis=-1))


@keras.saving.register_keras_serializable(package="joint_keras")
class MutualKL(JointLoss):
    """Deep mutual learning: each model learns the others' predictions.

    `loss = T^2 * mean over ordered pairs (i, j), i != j, of
    KL(stop_gradient(p_j) || p_i)`, with `p = softmax(logits / T)`. Each
    model is pulled toward the others, and no model is pushed by its own
    target term.

    References:
        Zhang, Xiang, Hospedales, Lu. Deep Mutual Learning. CVPR 2018.

    Args:
        models: List of at least two submodel names.
        temperature: Positive float `T`. Defaults to 1.0.
        from_logits: Whether outputs are logits. Defaults to `False`.
        weight: Weight of the term. Defaults to 1.0.
        name: Log name. Defaults to `"mutual_kl"`.
    """

    def __init__(
        self, models, temperature=1.0, from_logits=False, weight=1.0, name="mutual_kl"
    ):
        self.models = _check_models(models, "MutualKL")
        self.temperature = _check_temperature(temperature)
        self.from_logits = from_logits
        super().__init__(self.compute, weight=weight, name=name)

    def compute(self, y_true, y_pred):
        log_p = {
            m: _log_probs(y_pred[m], self.temperature, self.from_logits)
            for m in self.models
        }
        terms = [
            _kl(ops.stop_gradient(log_p[j]), log_p[i])
            for i in self.models
            for j in self.models
            if i != j
        ]
        return self.temperature**2 * ops.mean(ops.stack(terms))

    def get_config(self):
        return {
            "models": self.models,
            "temperature": self.temperature,
            "from_logits": self.from_logits,
            "weight": self.weight,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _check_models(models, owner):
    if isinstance(models, str) or len(models) < 2:
        raise ValueError(
            f"`{owner}` needs a list of at least two submodel names. "
            f"Received: models={models!r}"
        )
    return list(models)


def _check_temperature(temperature):
    if not temperature > 0:
        raise ValueError(
            f"`temperature` must be positive. Received: temperature={temperature!r}"
        )
    return float(temperature)
