"""PyTorch: gradients from one forward pass, its graph retained."""

import contextlib

import torch


def run_step(model, step, args):
    """Runs `step(data)` as Keras's PyTorch trainer runs a step."""
    (data,) = args
    return step(data)


def keep_state_on_error(model):
    """A no-op here (see `jax.keep_state_on_error`)."""
    return contextlib.nullcontext()


def vjp(fn, variables, probes=(), state=None):
    """Runs `fn(probes)` once; see `tensorflow.vjp` for the contract."""
    del state
    probes = [p.detach().requires_grad_(True) for p in probes]
    outputs, aux = fn(probes)
    return outputs, aux, Linearization(outputs, variables, probes)


class Linearization:
    """Gradients of a forward pass's outputs, as many as needed."""

    def __init__(self, outputs, variables, probes):
        self.outputs, self.variables, self.probes = outputs, variables, probes

    def _grad(self, outputs, sources, grad_outputs, batched=False):
        # An output that no variable reaches has no graph: no gradient.
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
        if not sources or not pairs:
            return [None] * len(sources)
        return torch.autograd.grad(
            [o for o, _ in pairs],
            sources,
            grad_outputs=[g for _, g in pairs],
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=batched,
        )

    def pullback(self, cotangents, indices):
        """Gradients of `sum_k cotangents[k] . outputs[k]` for
        `variables[indices]` and every probe (`None` where unconnected)."""
        keys = list(cotangents)
        outputs = [self.outputs[k] for k in keys]
        grad_outputs = [
            torch.as_tensor(cotangents[k], dtype=o.dtype, device=o.device).expand_as(o)
            for k, o in zip(keys, outputs)
        ]
        sources = [self.variables[i].value for i in indices] + self.probes
        grads = list(self._grad(outputs, sources, grad_outputs))
        return grads[: len(indices)], grads[len(indices) :]

    def connected(self, key, indices):
        """Whether `outputs[key]` depends on each of `variables[indices]`:
        a walk of its autograd graph to the leaves (no backward pass)."""
        leaves, seen, todo = set(), set(), [self.outputs[key].grad_fn]
        while todo:
            node = todo.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            if hasattr(node, "variable"):
                leaves.add(id(node.variable))
            todo.extend(next_node for next_node, _ in node.next_functions)
        return [id(self.variables[i].value) in leaves for i in indices]

    def jacobian(self, key, indices, vectorized=True):
        """Per-row gradients `(rows, *shape)` of the vector `outputs[key]`
        for `variables[indices]` and every probe: in one batched backward
        pass, or one backward pass per row."""
        output = self.outputs[key]
        basis = torch.eye(output.shape[0], dtype=output.dtype, device=output.device)
        sources = [self.variables[i].value for i in indices] + self.probes
        if vectorized:
            grads = self._grad([output], sources, [basis], batched=True)
        else:
            each = [self._grad([output], sources, [row]) for row in basis]
            grads = [None if g[0] is None else torch.stack(g) for g in zip(*each)]
        rows = [
            g if g is not None else torch.zeros((len(basis),) + s.shape).to(s)
            for g, s in zip(grads, sources)
        ]
        return rows[: len(indices)], rows[len(indices) :]


def input_gradient(fn, inputs, state=None):
    """The gradient of `sum(fn(inputs))` with respect to `inputs`, itself
    differentiable (`create_graph=True`, for a gradient penalty)."""
    del state
    # Keras builds the losses once under `torch.no_grad()` (their output
    # spec, with a compiled loss beside): the gradient needs autograd there.
    with torch.enable_grad():
        if not inputs.requires_grad:
            inputs = inputs.detach().requires_grad_(True)
        outputs = fn(inputs)
        (grad,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)
    return grad


def apply(optimizer, grads, variables):
    """Applies `grads` (aligned with `variables`, `None` for none)."""
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    with torch.no_grad():
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])


def cross_replica_sum(x):
    return x


def accelerated():
    """Whether the step runs on a GPU rather than the CPU (Keras puts
    tensors on CUDA or MPS when there is one)."""
    return torch.cuda.is_available() or torch.backends.mps.is_available()
