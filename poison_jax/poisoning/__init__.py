"""Floor 1, the poisoning problem: data, models, penalties, losses, the attack, victims and
hyperparameter learning, built on the engine (:mod:`poison_jax.engine`)."""

from poison_jax.poisoning import (
    attack,
    data,
    defences,
    feasible,
    hyperopt,
    losses,
    model_defences,
    models,
    outer,
    penalties,
    relaxed,
    seeds,
    victims,
)

__all__ = [
    "attack",
    "data",
    "defences",
    "feasible",
    "hyperopt",
    "losses",
    "model_defences",
    "models",
    "outer",
    "penalties",
    "relaxed",
    "seeds",
    "victims",
]
