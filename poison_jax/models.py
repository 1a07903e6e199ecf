"""The paper's classifiers (binary, or multiclass with ``num_classes`` outputs) and their penalty
(L2 by default) with log-λ per layer.

A :class:`Model` is a pair of pure functions plus the names of the layers the penalty acts on::

    params = model.init(key)              # dict: layer name -> {"kernel", "bias"}
    logits = model.apply(params, x)       # x (n, d) -> logits (n,), or (n, K) for K > 2 classes

Example::

    >>> import jax, jax.numpy as jnp
    >>> from poison_jax import models
    >>> model = models.mlp(4, hidden=(8, 3))
    >>> params = model.init(jax.random.PRNGKey(0))
    >>> model.apply(params, jnp.ones((5, 4))).shape
    (5,)
    >>> models.l2_penalty(model, params, jnp.zeros(model.num_layers)).shape
    ()
    >>> from poison_jax import penalties
    >>> models.logistic_regression(4, penalty=penalties.ElasticNet()).num_lams  # two λ per layer
    2
    >>> softmax = models.logistic_regression(4, num_classes=10)  # multinomial logistic regression
    >>> softmax.apply(softmax.init(jax.random.PRNGKey(0)), jnp.ones((5, 4))).shape
    (5, 10)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from poison_jax.losses import Logistic, Loss, bce
from poison_jax.penalties import L2, Penalty

Params = Any

__all__ = ["Model", "bce", "l2_penalty", "logistic_regression", "mlp", "penalty", "squared_norms", "weight_sizes"]


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A classifier (or a regression) as pure functions.

    Attributes:
      name: short description, e.g. ``"mlp 784x128x32x1"``.
      init: ``init(key) -> params``, a dict from layer name to ``{"kernel", "bias"}``.
      apply: ``apply(params, x) -> logits``, ``x`` float ``(n, d)``, logits ``(n,)`` (one score:
        binary classification, regression) or ``(n, num_classes)`` for ``num_classes > 2``.
      layers: names of the layers in input-to-output order; the penalty has one λ per layer.
      random_init: whether ``init`` depends on its key (the MLP) or is all zeros (logistic
        regression, w(0) = 0 as in the paper).
      penalty: the regularisation, a value from :mod:`poison_jax.penalties` (``L2()``, the paper's,
        by default); it has ``penalty.lams_per_layer`` log-λ per layer.
      loss: the per-example loss on the scores, a value from :mod:`poison_jax.losses`
        (``Logistic()``, the paper's, by default; ``SmoothedHinge()`` makes the linear model an SVM).
        With ``num_classes > 2`` only ``Logistic()`` (then the softmax cross-entropy) is allowed.
      num_classes: ``K``: labels are 0..K-1; 2 for a binary classifier (one score, class 1 where it
        is > 0) and for a regression; ``K > 2`` gives ``K`` scores, the predicted class their argmax.

    Models compare by identity, so one instance can be a static argument of ``jax.jit``.
    """

    name: str
    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]
    layers: tuple[str, ...]
    random_init: bool
    penalty: Penalty = L2()
    loss: Loss = Logistic()
    num_classes: int = 2

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_lams(self) -> int:
        """Length of the log-λ vector: ``penalty.lams_per_layer * num_layers``."""
        return self.penalty.lams_per_layer * self.num_layers


class _MLP(nn.Module):
    features: Sequence[int]
    zero_init: bool

    @nn.compact
    def __call__(self, x):
        if self.zero_init:
            kernel_init, bias_init = nn.initializers.zeros, nn.initializers.zeros
        else:  # the paper's DNN: Xavier-uniform weights, biases 0.01
            kernel_init, bias_init = nn.initializers.xavier_uniform(), nn.initializers.constant(0.01)
        for i, width in enumerate(self.features):
            x = nn.Dense(width, kernel_init=kernel_init, bias_init=bias_init, name=f"layer_{i}")(x)
            if i < len(self.features) - 1:
                x = nn.leaky_relu(x, negative_slope=0.1)
        return x[..., 0] if self.features[-1] == 1 else x


def _from_module(
    name: str, module: _MLP, d: int, random_init: bool, penalty: Penalty, loss: Loss, num_classes: int
) -> Model:
    example = jnp.zeros((1, d), jnp.float32)

    def init(key):
        return module.init(key, example)["params"]

    def apply(params, x):
        return module.apply({"params": params}, x)

    layers = tuple(f"layer_{i}" for i in range(len(module.features)))
    if not isinstance(penalty, Penalty):
        raise TypeError(
            f"penalty must be a poison_jax.penalties value (L2(), L1(...), ElasticNet(...)), got {penalty!r}"
        )
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a poison_jax.losses value (Logistic(), SmoothedHinge(...)), got {loss!r}")
    if num_classes > 2 and loss != Logistic():
        raise ValueError(
            f"loss {loss!r} has no multiclass form here: with num_classes={num_classes} use Logistic() "
            "(the softmax cross-entropy)"
        )
    for value, default in ((penalty, L2()), (loss, Logistic())):
        if value != default:
            name = f"{name}, {value}"
    return Model(
        name=name,
        init=init,
        apply=apply,
        layers=layers,
        random_init=random_init,
        penalty=penalty,
        loss=loss,
        num_classes=num_classes,
    )


def _check_sizes(**sizes):
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


def _outputs(num_classes) -> int:
    """The width of the last layer: 1 score for two classes, else one per class."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return 1 if num_classes == 2 else num_classes


def logistic_regression(d: int, penalty: Penalty = L2(), loss: Loss = Logistic(), num_classes: int = 2) -> Model:
    """Logistic regression on ``d`` features: one layer ``layer_0`` with kernel ``(d, 1)``, or
    ``(d, K)`` for ``num_classes = K > 2`` (multinomial: the softmax cross-entropy).

    ``init`` returns zeros whatever the key (the paper starts every inner training at w = 0).
    ``penalty``, ``loss``: see :class:`Model` (``loss=SmoothedHinge()``: a linear SVM).
    """
    _check_sizes(d=d)
    module = _MLP(features=(_outputs(num_classes),), zero_init=True)
    name = f"logistic regression d={d}" + (f", {num_classes} classes" if num_classes > 2 else "")
    return _from_module(name, module, d, False, penalty, loss, num_classes)


def mlp(
    d: int,
    hidden: Sequence[int] = (128, 32),
    penalty: Penalty = L2(),
    loss: Loss = Logistic(),
    num_classes: int = 2,
) -> Model:
    """The paper's DNN: ``d x hidden... x 1`` (``x K`` for ``num_classes = K > 2``), LeakyReLU
    (slope 0.1), Xavier-uniform weights, biases 0.01.

    With ``d = 2048`` and the default hidden sizes it has 266,433 parameters and three layers
    (three λ with the default ``L2()`` penalty, six with ``ElasticNet()``).
    """
    hidden = tuple(hidden)
    _check_sizes(d=d, **{f"hidden[{i}]": h for i, h in enumerate(hidden)})
    features = (*hidden, _outputs(num_classes))
    name = "mlp " + "x".join(str(n) for n in (d, *features))
    module = _MLP(features=features, zero_init=False)
    return _from_module(name, module, d, True, penalty, loss, num_classes)


def squared_norms(model: Model, params: Params) -> jax.Array:
    """``||W_l||²`` of each layer's kernel, shape ``(num_layers,)`` (biases excluded)."""
    return jnp.stack([jnp.sum(params[name]["kernel"] ** 2) for name in model.layers])


def weight_sizes(model: Model, params: Params) -> jax.Array:
    """Number of kernel entries of each layer, shape ``(num_layers,)``."""
    return jnp.asarray([params[name]["kernel"].size for name in model.layers], jnp.float32)


def l2_penalty(model: Model, params: Params, log_lam: jax.Array) -> jax.Array:
    """``Σ_l exp(λ_l)/2 · ||W_l||²``: one λ per layer, on the log scale.

    Only the kernels (weights) are penalised; biases are not, as in the paper.

    The training objectives of poison_jax divide the *sum* of per-example losses and this penalty
    by the number of training points: ``(Σ_i ℓ_i + Σ_l exp(λ_l)/2 ||W_l||²) / n``. Only with this
    scaling are the paper's inner step sizes stable over its λ boxes (e.g. η = 0.05 with
    λ ≤ log 20000 on 512 ImageNet points: η·exp(λ)/n = 1.95 < 2).

    Args:
      model: the model whose layers ``params`` holds.
      params: the model's parameters.
      log_lam: ``(num_layers,)`` log-λ per layer.
    Returns:
      A scalar.
    """
    return 0.5 * jnp.sum(jnp.exp(log_lam) * squared_norms(model, params))


def penalty(model: Model, params: Params, log_lam: jax.Array) -> jax.Array:
    """The model's penalty at ``params``: ``model.penalty`` on the layers' kernels.

    Args:
      model: the model whose layers ``params`` holds.
      params: the model's parameters.
      log_lam: ``(model.num_lams,)`` log-λ (per layer; elastic-net: the L1's, then the L2's).
    Returns:
      A scalar, scaled as :func:`l2_penalty` describes (the objectives divide it by ``n``).
    """
    return model.penalty([params[name]["kernel"] for name in model.layers], log_lam)
