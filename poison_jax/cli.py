"""The ``poison-jax`` command."""

from __future__ import annotations

import argparse
import sys

import poison_jax


def _example(args: argparse.Namespace) -> int:
    """A worked hypergradient: L2-regularised logistic regression with 3 poison points and log-λ."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from poison_jax import bilevel

    rng = np.random.default_rng(args.seed)
    d, n, n_p, n_val = 10, 60, 6, 40
    w_true = rng.normal(size=d)
    x, x_val = rng.normal(size=(n, d)), rng.normal(size=(n_val, d))
    y, y_val = (x @ w_true > 0).astype(np.float32), (x_val @ w_true > 0).astype(np.float32)
    x, x_val = jnp.asarray(x, jnp.float32), jnp.asarray(x_val, jnp.float32)
    y_p = 1.0 - y[:n_p]  # poison points: clones with flipped labels

    def bce(logits, labels):
        return jnp.mean(jax.nn.softplus(logits) - labels * logits)

    def inner_loss(w, theta):
        features = jnp.concatenate([theta["xp"], x[n_p:]])
        return bce(features @ w, jnp.concatenate([y_p, y[n_p:]])) + 0.5 * jnp.exp(theta["log_lam"]) * w @ w

    def outer_loss(w, theta):
        return bce(x_val @ w, y_val)

    theta = {"xp": x[:n_p], "log_lam": jnp.asarray(np.log(0.1), jnp.float32)}
    w0 = jnp.zeros(d, jnp.float32)
    print("Validation loss of logistic regression and its gradient w.r.t. 6 poison points and log-λ\n")
    for method in (bilevel.RMD(steps=args.steps, lr=1.0), bilevel.IFT(steps=args.steps, lr=1.0, cg_iters=50)):
        value, dtheta, info = bilevel.hypergrad_with_info(method, inner_loss, outer_loss, w0, theta)
        print(f"{method}")
        print(f"  validation loss        {float(value):.6f}")
        print(f"  d loss / d log-λ       {float(dtheta['log_lam']):+.6f}")
        print(f"  ||d loss / d Xp||      {float(jnp.linalg.norm(dtheta['xp'])):.6f}")
        print(f"  ||grad_w inner||       {float(info.inner_grad_norm):.2e}  (CG iterations {int(info.cg.iterations)})\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poison-jax",
        description="Optimal data poisoning against learners with learned regularisation (JAX).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {poison_jax.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    example = sub.add_parser("example", help="compute one hypergradient by RMD and by IFT on a small problem",
                             description=_example.__doc__)
    example.add_argument("--steps", type=int, default=500, help="inner gradient-descent steps (default: %(default)s)")
    example.add_argument("--seed", type=int, default=0, help="random seed of the data (default: %(default)s)")
    example.set_defaults(func=_example)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        print(f"\npoison-jax {poison_jax.__version__}")
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
