"""The flax adapter behind :func:`poison_jax.poisoning.models.from_flax`, its one public path."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from poison_jax.poisoning._parts import check_multiclass_loss, check_penalty_and_loss, kernel_leaves
from poison_jax.poisoning.losses import Logistic, Loss
from poison_jax.poisoning.models import Model, output_shape
from poison_jax.poisoning.penalties import L2, Penalty

_ALLOWED_OUTPUTS = (
    "(n,) or (n, 1): one score (two classes, or a regression); (n, 2): two classes' logits; "
    "(n, K): K >= 3 classes' logits"
)


def from_flax(
    module: Any,
    example_x: ArrayLike,
    *,
    layers: Sequence[str] | None = None,
    penalty: Penalty = L2(),
    loss: Loss = Logistic(),
    name: str | None = None,
) -> Model:
    """A :class:`Model` from a user's ``flax.linen`` or ``flax.nnx`` module, checked on ``example_x``.

    The module maps features ``(n, d)`` to scores, whose shape decides the task: ``(n,)`` or ``(n, 1)``,
    one score -- a binary classifier (class 1 where the score is > 0) or, with ``loss=losses.Squared()``,
    a regression; ``(n, 2)``, two classes' logits, turned into the one score ``logit_1 − logit_0``
    (whose binary cross-entropy is the softmax cross-entropy of the two logits); ``(n, K)``, ``K >= 3``
    classes (softmax cross-entropy, labels 0..K−1). Any other shape is refused here, naming it: a
    shape mistake never reaches the attack as silently broadcast (NaN or meaningless) losses.

    ``flax.linen``: ``init(key)`` is ``module.init(key, example_x[:1])["params"]``, a fresh random
    initialisation for every key (the attack re-initialises each hyperiteration, as the paper's network
    does); modules with other variable collections (``batch_stats``) are refused, as the inner problem
    must be a function of the parameters alone. ``flax.nnx``: the parameters are the module's
    ``nnx.Param`` values as built (a pure dict), which ``init`` returns whatever the key.

    Args:
      module: a ``flax.linen.Module`` or a ``flax.nnx.Module``.
      example_x: ``(n, d)`` features (a few rows suffice), for the parameters' shapes and the output check.
      layers: the layers the penalty acts on, each the ``/``-joined path of a module holding a ``kernel``
        (e.g. ``("Dense_0", "Dense_1")``), one log-λ each (times ``penalty.lams_per_layer``); default
        every kernel in the parameter tree, in its order.
      penalty, loss: as for :class:`Model`.
      name: a label (default: the module's class name and its parameter count).

    Example::

        >>> import flax.linen as nn, jax.numpy as jnp
        >>> from poison_jax.poisoning import models
        >>> class Net(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x):
        ...         return nn.Dense(1)(nn.tanh(nn.Dense(8)(x)))
        >>> model = models.from_flax(Net(), jnp.zeros((4, 3)))
        >>> model.layers, model.num_classes, model.num_lams
        (('Dense_0', 'Dense_1'), 2, 2)
        >>> models.from_flax(Net(), jnp.zeros((4, 3)), layers=["Dense_1"]).num_lams  # penalise one layer
        1
    """
    check_penalty_and_loss(penalty, loss)
    example = jnp.asarray(example_x, jnp.float32)
    if example.ndim != 2 or example.shape[0] == 0:
        raise ValueError(f"example_x must be 2-D features (n, d) with n >= 1, got shape {example.shape}")
    init, raw_apply = _flax_functions(module, example)
    params = jax.eval_shape(init, jax.eval_shape(jax.random.PRNGKey, 0))
    num_classes, apply = _scores(module, raw_apply, params, example)
    check_multiclass_loss(loss, num_classes, scores=f"{type(module).__name__} returns {num_classes} scores;")
    layers = _penalised_layers(module, params, layers)
    name = name if name is not None else _label(module, params)
    model = Model(name, init, apply, layers, random_init=True, penalty=penalty, loss=loss, num_classes=num_classes)
    output_shape(model, example)
    return model


def _label(module, params) -> str:
    """The module's class name and its parameter count."""
    size = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))
    return f"{type(module).__name__} ({size:,} parameters)"


def _scores(module, raw_apply, params, example) -> tuple[int, Any]:
    """``(num_classes, apply)``: the module's output shape on ``example`` read as one score, two
    logits (made one score) or ``K`` classes' logits; anything else refused, naming the shape."""
    out = jax.eval_shape(raw_apply, params, example)
    n = example.shape[0]
    shape = getattr(out, "shape", None)
    if shape == (n,) or shape == (n, 1):
        return 2, _one_score(raw_apply, shape)
    if shape == (n, 2):
        return 2, _logit_difference(raw_apply)
    if shape is not None and len(shape) == 2 and shape[0] == n and shape[1] >= 3:
        return shape[1], raw_apply
    raise ValueError(
        f"{type(module).__name__} returns shape {shape if shape is not None else out} for example_x of shape "
        f"{example.shape}; allowed: {_ALLOWED_OUTPUTS}"
    )


def _penalised_layers(module, params, layers: Sequence[str] | None) -> tuple[str, ...]:
    """The layers the penalty acts on: ``layers`` checked against the kernels of ``params``, or all of them."""
    found = kernel_leaves(params)
    if layers is None:
        if not found:
            raise ValueError(
                f"{type(module).__name__} has no parameter named 'kernel' for the penalty; pass layers=..."
            )
        return tuple(found)
    layers = tuple(layers)
    unknown = [layer for layer in layers if layer not in found]
    if unknown or not layers:
        raise ValueError(
            f"layers {list(unknown) or list(layers)} are not modules with a kernel in {type(module).__name__}'s "
            f"parameters; allowed: {', '.join(found) or 'none'}"
        )
    return layers


def _flax_functions(module, example):
    """``(init(key) -> params, apply(params, x) -> raw output)`` of a linen or an nnx module."""
    if isinstance(module, nn.Module):
        variables = jax.eval_shape(module.init, jax.eval_shape(jax.random.PRNGKey, 0), example[:1])
        others = sorted(set(variables) - {"params"})
        if others:
            raise ValueError(
                f"{type(module).__name__} has variable collections {others} besides 'params': only modules whose "
                "variables are all parameters can be attacked (the inner problem is a function of the parameters)"
            )

        def init(key):
            return module.init(key, example[:1])["params"]

        def apply(params, x):
            return module.apply({"params": params}, x)

        return init, apply
    from flax import nnx

    if isinstance(module, nnx.Module):
        graph, state, rest = nnx.split(module, nnx.Param, ...)
        pure = nnx.to_pure_dict(state)

        def init_nnx(key):
            return pure

        def apply_nnx(params, x):
            filled = jax.tree_util.tree_map(lambda a: a, state)
            nnx.replace_by_pure_dict(filled, params)
            return nnx.merge(graph, filled, rest)(x)

        return init_nnx, apply_nnx
    raise TypeError(
        f"from_flax takes a flax.linen.Module or a flax.nnx.Module, got {type(module).__name__}; for plain "
        "functions build poison_jax.poisoning.models.Model(name, init, apply, layers, random_init) directly"
    )


def _one_score(apply, shape):
    if len(shape) == 1:
        return apply
    return lambda params, x: apply(params, x)[..., 0]


def _logit_difference(apply):
    def score(params, x):
        logits = apply(params, x)
        return logits[..., 1] - logits[..., 0]

    return score
