"""``poison-jax example`` (private: the command is :mod:`poison_jax.face.cli`): one hypergradient
worked by RMD and by IFT on a small problem, from the engine alone."""

from __future__ import annotations


def example(args) -> int:
    """A worked hypergradient: L2-regularised logistic regression with 6 poison points and log-λ."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from poison_jax import engine

    rng = np.random.default_rng(args.seed)
    d, n, n_p, n_val = 10, 60, 6, 40
    w_true = rng.normal(size=d)
    x_np, x_val_np = rng.normal(size=(n, d)), rng.normal(size=(n_val, d))
    y, y_val = (x_np @ w_true > 0).astype(np.float32), (x_val_np @ w_true > 0).astype(np.float32)
    x, x_val = jnp.asarray(x_np, jnp.float32), jnp.asarray(x_val_np, jnp.float32)
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
    for method in (engine.RMD(steps=args.steps, lr=1.0), engine.IFT(steps=args.steps, lr=1.0, cg_iters=50)):
        result = engine.hypergrad(method, inner_loss, outer_loss, w0, theta)
        print(f"{method}")
        print(f"  validation loss        {float(result.value):.6f}")
        print(f"  d loss / d log-λ       {float(result.grad['log_lam']):+.6f}")
        print(f"  ||d loss / d Xp||      {float(jnp.linalg.norm(result.grad['xp'])):.6f}")
        stats = ", ".join(f"{k} {float(v):.3g}" for k, v in sorted(result.stats.items()))
        print(f"  status                 {engine.message(result.status)} ({stats})\n")
    return 0
