"""PyTorch: one gradient per loss group, from one forward pass."""

import keras
import torch
from keras import tree

from joint_keras import _routing
from joint_keras import _task_gradients


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


def gradient_step(model, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    layer = _task_gradients.representation_layer(model)
    with _task_gradients.capture_outputs(layer) as copies:
        y_pred = model(x, training=True)
    model.zero_grad()
    groups = model._compute_loss_groups(x, y, y_pred, sample_weight, training=True)
    total = groups[None]
    model._loss_tracker.update_state(total, sample_weight=tree.flatten(x)[0].shape[0])
    losses = model._compile_loss.task_losses
    variables = model.trainable_variables
    if layer is None:
        shared = _task_gradients.shared_variable_indices(model)
        sources = [variables[i].value for i in shared]
    else:
        sources = copies
    jacobians = _jacobian(optimizer.scale_loss(losses), sources)
    if layer is not None:
        # Each copy's output is the same representation: sum per task.
        jacobians = [sum(jacobians[1:], jacobians[0])]
    a, b = _task_gradients.coefficients(
        model,
        jacobians,
        model._compile_loss.task_raw_losses,
        loss_scale=optimizer.scale_loss(1.0),
    )
    rest = optimizer.scale_loss(_task_gradients.rest_loss(total, losses, b))
    tensors = [v.value for v in variables]
    if layer is None:
        grads = list(torch.autograd.grad(rest, tensors, allow_unused=True))
        _task_gradients.add_mixed(grads, jacobians, shared, a, b)
    else:
        # The trunk's combined update: its backward pass from the first
        # copy, given the mixed minus the summed representation gradient.
        correction = _task_gradients.mix(a - b, jacobians[0])
        grads = torch.autograd.grad(
            [rest, copies[0]],
            tensors,
            grad_outputs=[torch.ones_like(rest), correction],
            allow_unused=True,
        )
    with torch.no_grad():
        optimizer.apply(*_routing.with_gradients(list(grads), variables))
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _jacobian(losses, tensors):
    """Per-task gradients `(num_tasks, *shape)` per tensor, in one batched
    backward pass (`torch.vmap` over the backward)."""
    basis = torch.eye(losses.shape[0], dtype=losses.dtype, device=losses.device)
    grads = torch.autograd.grad(
        losses,
        tensors,
        grad_outputs=basis,
        is_grads_batched=True,
        retain_graph=True,
        allow_unused=True,
    )
    return [
        torch.zeros((losses.shape[0],) + tuple(t.shape), dtype=t.dtype, device=t.device)
        if g is None
        else g
        for g, t in zip(grads, tensors)
    ]
