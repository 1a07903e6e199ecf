"""What the built-in models and the flax adapter share: finding the kernels a penalty acts on, and
checking a model's penalty and loss (the one public path of both models is
:mod:`poison_jax.poisoning.models`)."""

from __future__ import annotations

from typing import Any

import jax

from poison_jax.poisoning.losses import Logistic, Loss
from poison_jax.poisoning.penalties import Penalty


def path_name(path) -> str:
    """``"Block_0/Dense_1/kernel"`` for a tree path of dict keys, attributes or sequence indices."""
    parts = []
    for key in path:
        part = getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))
        parts.append(str(part))
    if parts and parts[-1] in ("value", "raw_value"):  # an nnx Variable's array
        parts.pop()
    return "/".join(parts)


def kernel_leaves(params: Any) -> dict[str, jax.Array]:
    """``{layer name: kernel}`` of every leaf named ``kernel`` in ``params``, in tree order."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    named = ((path_name(path), leaf) for path, leaf in leaves)
    return {
        name.rsplit("/", 1)[0] if "/" in name else "": leaf for name, leaf in named if name.split("/")[-1] == "kernel"
    }


def check_penalty_and_loss(penalty: Any, loss: Any) -> None:
    """Refuse a penalty or a loss that is not one of the package's values, naming what is allowed."""
    if not isinstance(penalty, Penalty):
        raise TypeError(
            f"penalty must be a poison_jax.poisoning.penalties value (L2(), L1(...), ElasticNet(...)), got {penalty!r}"
        )
    if not isinstance(loss, Loss):
        raise TypeError(
            f"loss must be a poison_jax.poisoning.losses value (Logistic(), SmoothedHinge(...), Squared()), "
            f"got {loss!r}"
        )


def check_multiclass_loss(loss: Loss, num_classes: int, *, scores: str) -> None:
    """Refuse a loss without a multiclass form for ``num_classes > 2`` (``scores`` says where the
    scores come from, for the message)."""
    if num_classes > 2 and loss != Logistic():
        raise ValueError(
            f"loss {loss!r} has no multiclass form here: {scores} use Logistic() (the softmax cross-entropy)"
        )
