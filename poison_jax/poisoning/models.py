"""The paper's classifiers (binary, or multiclass with ``num_classes`` outputs) and their penalty
(L2 by default) with log-λ per layer.

A :class:`Model` is a pair of pure functions plus the names of the layers the penalty acts on::

    params = model.init(key)              # dict: layer name -> {"kernel", "bias"}
    logits = model.apply(params, x)       # x (n, d) -> logits (n,), or (n, K) for K > 2 classes

Example::

    >>> import jax, jax.numpy as jnp
    >>> from poison_jax.poisoning import models
    >>> model = models.mlp(4, hidden=(8, 3))
    >>> params = model.init(jax.random.PRNGKey(0))
    >>> model.apply(params, jnp.ones((5, 4))).shape
    (5,)
    >>> models.penalty(model, params, jnp.zeros(model.num_lams)).shape
    ()
    >>> from poison_jax.poisoning import penalties
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
import numpy as np
from jax.typing import ArrayLike

from poison_jax.engine import checks
from poison_jax.poisoning._parts import check_multiclass_loss, check_penalty_and_loss, kernel_leaves
from poison_jax.poisoning.losses import Logistic, Loss
from poison_jax.poisoning.penalties import L2, Penalty

Params = Any

__all__ = [
    "Model",
    "from_flax",
    "kernels",
    "logistic_regression",
    "mlp",
    "output_shape",
    "penalty",
    "squared_norms",
    "weight_sizes",
]


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
      penalty: the regularisation, a value from :mod:`poison_jax.poisoning.penalties` (``L2()``, the paper's,
        by default); it has ``penalty.lams_per_layer`` log-λ per layer.
      loss: the per-example loss on the scores, a value from :mod:`poison_jax.poisoning.losses`
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
    name: str, module: _MLP, d: int, *, random_init: bool, penalty: Penalty, loss: Loss, num_classes: int
) -> Model:
    example = np.zeros((1, d), np.float32)  # numpy: jnp.zeros would compile a program per process

    def init(key):
        return module.init(key, example)["params"]

    def apply(params, x):
        return module.apply({"params": params}, x)

    layers = tuple(f"layer_{i}" for i in range(len(module.features)))
    check_penalty_and_loss(penalty, loss)
    check_multiclass_loss(loss, num_classes, scores=f"with num_classes={num_classes}")
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


def _outputs(num_classes) -> int:
    """The width of the last layer: 1 score for two classes, else one per class."""
    num_classes = checks.integer("num_classes", num_classes, low=2)
    return 1 if num_classes == 2 else num_classes


def logistic_regression(d: int, penalty: Penalty = L2(), loss: Loss = Logistic(), num_classes: int = 2) -> Model:
    """Logistic regression on ``d`` features: one layer ``layer_0`` with kernel ``(d, 1)``, or
    ``(d, K)`` for ``num_classes = K > 2`` (multinomial: the softmax cross-entropy).

    ``init`` returns zeros whatever the key (the paper starts every inner training at w = 0).
    ``penalty``, ``loss``: see :class:`Model` (``loss=SmoothedHinge()``: a linear SVM).
    """
    checks.positive_int("d", d)
    module = _MLP(features=(_outputs(num_classes),), zero_init=True)
    name = f"logistic regression d={d}" + (f", {num_classes} classes" if num_classes > 2 else "")
    return _from_module(name, module, d, random_init=False, penalty=penalty, loss=loss, num_classes=num_classes)


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
    for field, size in (("d", d), *((f"hidden[{i}]", h) for i, h in enumerate(hidden))):
        checks.positive_int(field, size)
    features = (*hidden, _outputs(num_classes))
    name = "mlp " + "x".join(str(n) for n in (d, *features))
    module = _MLP(features=features, zero_init=False)
    return _from_module(name, module, d, random_init=True, penalty=penalty, loss=loss, num_classes=num_classes)


def kernels(model: Model, params: Params) -> list[jax.Array]:
    """The kernels the penalty acts on, one per layer of ``model.layers`` in order.

    A layer name is the ``/``-joined path of a module in the parameter tree (``"layer_0"``,
    ``"Block_0/Dense_1"``); its kernel is that module's ``"kernel"`` entry.
    """
    found = kernel_leaves(params)
    return [found[name] for name in model.layers]


def output_shape(model: Model, x: ArrayLike | jax.ShapeDtypeStruct) -> tuple[int, ...]:
    """The shape of ``model.apply(params, x)``, checked against ``model.num_classes``.

    Traced only (``jax.eval_shape``): nothing is computed. ``x`` is ``(n, d)`` features, or anything
    with that ``shape`` (a ``jax.ShapeDtypeStruct``).

    Raises:
      ValueError: the output is not ``(n,)`` for a one-score model or ``(n, K)`` for
        ``K = model.num_classes > 2``, naming the shape and what is allowed -- a shape mistake
        would otherwise broadcast into wrong (or NaN) losses.
    """
    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    if len(shape) != 2:
        raise ValueError(f"{model.name}: the features must be 2-D (n, d), got shape {shape}")
    params = jax.eval_shape(model.init, jax.eval_shape(jax.random.PRNGKey, 0))
    out = jax.eval_shape(model.apply, params, jax.ShapeDtypeStruct(shape, jnp.float32))
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError(f"{model.name}: apply must return one array of scores, got {out}")
    n, k = shape[0], model.num_classes
    want = (n,) if k == 2 else (n, k)
    if out.shape != want:
        what = "one score per example" if k == 2 else f"{k} scores per example (num_classes={k})"
        raise ValueError(
            f"{model.name}: apply(params, x) with x of shape {shape} returns shape {out.shape}, but the model "
            f"must return {want}, {what}"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"{model.name}: apply must return floating-point scores, got dtype {out.dtype}")
    return out.shape


def squared_norms(model: Model, params: Params) -> jax.Array:
    """``||W_l||²`` of each layer's kernel, shape ``(num_layers,)`` (biases excluded)."""
    return jnp.stack([jnp.sum(k**2) for k in kernels(model, params)])


def weight_sizes(model: Model, params: Params) -> jax.Array:
    """Number of kernel entries of each layer, shape ``(num_layers,)``."""
    return jnp.asarray([k.size for k in kernels(model, params)], jnp.float32)


def penalty(model: Model, params: Params, log_lam: jax.Array) -> jax.Array:
    """The model's penalty at ``params``: ``model.penalty`` on the layers' kernels (biases are never
    penalised, as in the paper); with the default ``L2()``, ``Σ_l exp(λ_l)/2 · ||W_l||²``.

    The training objectives of poison_jax divide the *sum* of per-example losses and this penalty
    by the number of training points: ``(Σ_i ℓ_i + penalty) / n``. Only with this scaling are the
    paper's inner step sizes stable over its λ boxes (e.g. η = 0.05 with λ ≤ log 20000 on 512
    ImageNet points: η·exp(λ)/n = 1.95 < 2).

    Args:
      model: the model whose layers ``params`` holds.
      params: the model's parameters.
      log_lam: ``(model.num_lams,)`` log-λ (per layer; elastic-net: the L1's, then the L2's).
    Returns:
      A scalar.
    """
    return model.penalty(kernels(model, params), log_lam)


from poison_jax.poisoning._flax import from_flax  # noqa: E402  (the adapter builds on the definitions above)
