"""PyTorch: one gradient per loss group, from one forward pass."""

import keras
import torch
from keras import tree

from joint_keras import _routing


def train_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = model(x, training=True)
    model.zero_grad()
    groups = model._compute_loss_groups(x, y, y_pred, sample_weight, training=True)
    losses = list(groups.values())
    total = sum(losses[1:], losses[0])
    model._loss_tracker.update_state(total, sample_weight=tree.flatten(x)[0].shape[0])
    variables = model.trainable_variables
    indices = _routing.group_indices(model, groups)
    per_group = []
    for k, (loss, idx) in enumerate(zip(losses, indices)):
        per_group.append(
            torch.autograd.grad(
                model.optimizer.scale_loss(loss),
                [variables[i].value for i in idx],
                retain_graph=k < len(losses) - 1,
                allow_unused=True,
            )
        )
    grads = _routing.combine(per_group, indices, len(variables))
    with torch.no_grad():
        model.optimizer.apply(*_routing.with_gradients(grads, variables))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
