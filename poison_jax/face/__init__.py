"""Floor 3, the face: the ``poison-jax`` command (:mod:`poison_jax.face.cli`) and the figures
(:mod:`poison_jax.face.plots`, matplotlib). Neither is imported by ``import poison_jax``."""
