"""Batching over seeds and jit: one RMD hypergradient of logistic regression (MNIST shape) for 10
seeds as a Python loop over the seeds, as one ``vmap``ped call, and as one call with the seed axis
sharded over the host's CPU cores (what the sweep runner does); jit against no jit. From the sharded
timings, the projected wall time of the paper's whole MNIST LR sweep.

* Sizes: d = 784, 512 training rows of which 85 poison, 171 validation, T = 150, η = 0.1, random
  data of that shape (:func:`benchmarks.problems.random_splits`), 10 seeds. A hyperiteration is
  :func:`poison_jax.poisoning.attack.poison_step` with Λ fixed (one hypergradient a seed).
* Loop: the same jitted step called on each seed's slice. vmap: one call on all seeds (one device).
  Sharded: a fresh process that splits the host into one XLA device per core
  (``jax_num_cpu_devices``) and places the seed axis with
  :class:`poison_jax.experiments.devices.SeedSharding` (a ``Mesh`` axis ``"seed"``, ``NamedSharding``); there
  the loop and the one-device vmap are timed again, interleaved with it.
* jit against no jit: one RMD hypergradient at T = 20 (eagerly it is slow) under
  ``jax.disable_jit()`` against the jitted call.
* Profile: XLA's cost analysis of the one-seed step (flops, bytes accessed), the bandwidth it
  reaches, the host's copy bandwidth, and the dispatch cost of a jitted call: why batching gains
  what it gains.
* Sweep projection (4 Λ settings x 6 fractions x 10 seeds x 100 hyperiterations, T = 150): per seed
  3 fixed-Λ settings x 5 batches x 100 + the learned Λ's 50 (T_λ) + 5 x 100 x 2 (two hypergradients
  a multiobjective hyperiteration) = 2,550 hypergradients, each timed as one sharded hyperiteration
  of ``run_attack`` chunks of 10 (as the runner calls it); plus the victim evaluation of the 24 cells
  and the λ_CLEAN cross-validation, measured the same way; compilation is reported apart.

Goal ``seeds_over_loop`` (the whole sweep's time is :mod:`benchmarks.sweeps`'s). Modules: :mod:`.cases` (what is timed),
:mod:`.projection` (the sweep's projection and the diagnoses).

    python -m benchmarks.batching [--quick] [--out benchmarks/results] [--device cpu|gpu]
"""
