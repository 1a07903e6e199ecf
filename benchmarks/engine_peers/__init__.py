"""The engine against JAX's own bilevel tools: accuracy and cost of one hypergradient.

Problem: L2 logistic regression on real MNIST 0 v 8 (the offline 5,000-image sample), 512 training
rows of which 85 are poison points (replace mode: cloned from validation with flipped labels, each
replacing a clean row), 171 validation rows, log λ = 1.6; the losses are
:func:`poison_jax.poisoning.attack.make_losses`'s and ``theta = {"xp": (85, 784), "log_lam": (1,)}``.

Reference: the exact hypergradient (dense Hessian solve, :func:`benchmarks.engine_calls.exact`)
in float64 at a Newton optimum (``NewtonCG(tol=1e-12)``), computed in a separate process with
``jax_enable_x64`` (optimistix's LBFGS fails to trace in a process with x64 on and float32 inputs):
``python -m benchmarks.engine_peers --reference-only DIR`` reads ``DIR/problem.npz`` and writes
``DIR/reference.npz``.

Timed, float32, jitted, median warm wall time (interleaved rounds, one warm-up call each):

* poison_jax's paper paths: ``IFT`` (T steps of gradient descent, then CG) and ``RMD``, η = 0.1;
* poison_jax's converged path: ``Implicit`` with ``NewtonCG`` or ``LBFGS``, and ``ImplicitDense``
  (``DenseNewton``, the adjoint by its Cholesky factor), from w0 = 0 (cold), and
  from the ``Warm`` of the previous hyperiteration (``xp`` perturbed by 0.01 N(0, 1), clipped to
  [0, 1]): the "warm" rows, what one hyperiteration of the attack costs;
* optimistix ``LBFGS`` / ``BFGS`` + ``ImplicitAdjoint`` (``jax.value_and_grad`` through
  ``optx.minimise``), jaxopt ``LBFGS`` with ``implicit_diff``, each with its default adjoint solve
  (optimistix: a dense solve of the materialised Hessian; jaxopt: CG on the normal equations) and
  with a CG adjoint we configured (lineax ``CG`` with the PSD tag; jaxopt ``solve_cg``), the
  strongest peers we found; their "warm" rows start the inner solve at their own solution of the
  previous hyperiteration (the adjoint solve stays cold: neither library takes an adjoint warm start).

Each row: cosine of the whole flattened hypergradient to the reference, its relative error, the
relative error of the log-λ component, and whether cosine >= 0.999. The summary gives each family's
fastest setting reaching 0.999 and the headline: fastest poison_jax path / fastest peer (any library,
solver, adjoint and tolerance), cold start against cold start (goal <= 0.5); also against the peers'
default adjoints only, and warm start against warm start.

    python -m benchmarks.engine_peers [--quick] [--out benchmarks/results] [--device cpu|gpu] [--wait-idle S]

Writes ``engine_peers.json``, ``engine_peers.md`` and ``engine_peers.png``. Modules: :mod:`.problem` (the
problem and its float64 reference), :mod:`.candidates` (the timed hypergradients, as values),
:mod:`.compare` (timing, rows and ratios), :mod:`.report` (table and figure).
"""
