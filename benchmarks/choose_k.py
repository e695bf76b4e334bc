"""Rules that choose the number of clusters, compared on planted mixtures (not on the demo).

Each planted mixture (simulator.mixtures) has a known number of clusters k (3, 6, 10), 600 bar
codes of 4 features x 8 orientations (the cpu preset's), and one of four families: spherical,
aniso (unequal sizes, anisotropic), curved (+ continuous within-cluster variation), heavy (+
Student-t tails). For every rule it prints the chosen k and the ARI of the k-means labels at that
k against the planted labels (the pipeline's default method), with the ARI at the planted k for
reference. ``choose_k`` is the pipeline's rule (clustering.mixture.choose_k); the others are the
candidates it was chosen from (docs/validation/choosing_k.md).

    python benchmarks/choose_k.py                 # 4 families x k in 3, 6, 10 x 3 seeds
    python benchmarks/choose_k.py --seeds 0 --families curved
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from clustering import mixture  # noqa: E402
from simulator.mixtures import FAMILIES, planted  # noqa: E402


# -- candidate rules -------------------------------------------------------------------------
def rule_one_se(ks, scores, **_):
    """Smallest k within one s.e. of the best mean held-out log-likelihood (paired)."""
    d = scores[:, [np.argmax(scores.mean(0))]] - scores
    return int(ks[d.mean(0) <= d.std(0, ddof=1) / np.sqrt(len(d))].min())


def rule_gain(ks, scores, fraction=0.9, **_):
    """Smallest k reaching ``fraction`` of the held-out gain from k = 1 to the best k."""
    ll = scores.mean(0)
    return int(ks[np.argmax(ll - ll[0] >= fraction * (ll.max() - ll[0]))])


def rule_last_step(ks, scores, fraction=0.05, **_):
    """The last k whose own step gains >= ``fraction`` of the total held-out gain."""
    ll = scores.mean(0)
    steps = np.diff(ll) >= fraction * (ll.max() - ll[0])
    return int(ks[1:][steps].max()) if steps.any() else int(ks[0])


def _criteria(x, ks, seed):
    """BIC and ICL (sklearn's sign: lower is better) of spherical GMMs fitted on all of x."""
    flat = x.reshape(len(x), -1)
    bic, icl = [], []
    for k in ks:
        g = mixture._gmm(int(k), seed, 4).fit(flat)
        b = g.bic(flat)
        t = g.predict_proba(flat)
        bic.append(b)
        icl.append(b - 2 * np.sum(t * np.log(np.clip(t, 1e-300, None))))
    return np.array(bic), np.array(icl)


def evaluate(family, k, seed, ks):
    x, labels = planted(family, k, seed=seed)
    scores = mixture.heldout_scores(x, ks, random_state=0, progress=False)
    bic, icl = _criteria(x, ks, 0)
    stab = mixture.stability(x, ks, random_state=0, progress=False)
    choice = {
        "one_se": rule_one_se(ks, scores),
        "gain90": rule_gain(ks, scores, 0.9),
        "gain95": rule_gain(ks, scores, 0.95),
        "step5": rule_last_step(ks, scores, 0.05),
        "bic": int(ks[np.argmin(bic)]),
        "icl": int(ks[np.argmin(icl)]),
        "stab_max": int(ks[1:][np.argmax(stab[1:])]),
        "stab90": int(ks[stab >= 0.9].max()),
        "stab80": int(ks[stab >= 0.8].max()),
        "stab85": int(ks[stab >= 0.85].max()),
        "stab95": int(ks[stab >= 0.95].max()),
    }
    cap = choice["one_se"]
    for t in (80, 85, 90, 95):
        choice[f"cap{t}"] = int(ks[(stab >= t / 100) & (ks <= cap)].max())
    choice["no_floor"] = mixture.choose_k(ks, scores, stab, floor_se=np.inf)[0]
    for f in (10, 20, 30):
        choice[f"floor{f}"] = mixture.choose_k(ks, scores, stab, floor_gain=f / 100)[0]
    choice["choose_k"] = mixture.choose_k(ks, scores, stab)[0]
    ari = {}
    for kk in set(choice.values()) | {k}:
        found, _ = mixture.fit_clusters(x, "kmeans", kk, random_state=0)
        ari[kk] = adjusted_rand_score(labels, found)
    row = dict(family=family, k=k, seed=seed, ari_true_k=ari[k])
    for r, c in choice.items():
        row[r] = c
        row[f"ari_{r}"] = ari[c]
    row["ll"] = " ".join(f"{v:.2f}" for v in scores.mean(0))
    row["stab"] = " ".join(f"{v:.2f}" for v in stab)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--ks", nargs="+", type=int, default=[3, 6, 10])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", default=None, help="CSV of every row")
    args = ap.parse_args()
    ks = np.arange(1, 14)
    rows = []
    for family in args.families:
        for k in args.ks:
            for seed in args.seeds:
                t0 = time.time()
                rows.append(evaluate(family, k, seed, ks))
                r = rows[-1]
                print(
                    f"{family:9s} k={k:2d} s={seed} ({time.time() - t0:.0f}s) "
                    + " ".join(f"{n}={r[n]}" for n in r if n in RULES),
                    flush=True,
                )
    df = pd.DataFrame(rows)
    if args.out:
        df.to_csv(args.out, index=False)
    summary(df)


RULES = (
    "one_se",
    "gain90",
    "gain95",
    "step5",
    "bic",
    "icl",
    "stab_max",
    "stab90",
    "stab85",
    "stab80",
    "stab95",
    "cap80",
    "cap85",
    "cap90",
    "cap95",
    "no_floor",
    "floor10",
    "floor20",
    "floor30",
    "choose_k",
)


def summary(df):
    rules = [r for r in df.columns if f"ari_{r}" in df.columns]
    print(
        "\nfraction of mixtures with the planted k, and mean ARI (ARI at planted k: "
        f"{df.ari_true_k.mean():.3f})"
    )
    for family, g in df.groupby("family", sort=False):
        print(
            f"  {family}: "
            + ", ".join(f"{r} {np.mean(g[r] == g.k):.2f}/{g[f'ari_{r}'].mean():.2f}" for r in rules)
        )
    print(
        "  all: "
        + ", ".join(f"{r} {np.mean(df[r] == df.k):.2f}/{df[f'ari_{r}'].mean():.2f}" for r in rules)
    )


if __name__ == "__main__":
    main()
