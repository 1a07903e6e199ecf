"""Accuracy against cost: RMD over T, IFT over CG iterations and over how converged w* is, each
against the exact hypergradient (float64, dense Hessian solve at a w* polished by Newton steps).

* Logistic regression, MNIST shape: real MNIST 0 v 8 (the offline 5,000-image sample), 512 training
  rows of which 85 are poison (cloned from validation with flipped labels), 171 validation rows,
  d = 784, η = 0.1 (the paper's), log λ = log 20 (inside the range λ learned in the demo). theta is
  ``{"xp": (85, 784), "log_lam": (1,)}``: the cosine and relative error are over all of it.
* A reduced MLP: the paper's DNN (2048x128x32x1, 266,433 parameters) cannot have a dense Hessian,
  and its inner problem has no smooth, strongly convex optimum to differentiate at (LeakyReLU
  kinks where the L2 penalty piles pre-activations up, unpenalised biases giving flat directions;
  measured and recorded under ``mlp.paper_activation_diagnostic``). The reference problem is
  digits 0 v 8 (d = 64), 64x16x8x1 (1,185 parameters), the paper's LeakyReLU smoothed to
  ``0.1 z + 0.9 softplus(z)`` and the per-layer L2 penalty on biases too; its Hessian's smallest
  eigenvalue at w* is recorded (> 0: strongly convex there).

RMD and IFT run in float32 (as in practice, timed); only the reference is float64. Times are
medians of interleaved calls, compilation excluded. The goal: the cost of the cheapest IFT
(training w* included, tight CG) reaching cosine >= 0.999 against the exact hypergradient, over
that of the cheapest RMD reaching it, at the same inner step size (thresholds found by bisection
on the number of steps).

    python -m benchmarks.accuracy [--quick] [--out benchmarks/results] [--device cpu|gpu]

Writes ``accuracy.json``, ``accuracy.md`` and ``accuracy.png``. Goal ``ift_over_rmd_to_0.999``.

Modules: :mod:`.problem` (the problems and their float64 references), :mod:`.study` (the
timed candidates and the goal), :mod:`.report` (table and figure).
"""
