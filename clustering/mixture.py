"""Clustering of aligned bar codes: GMM with spherical covariances or k-means (scikit-learn), the
held-out likelihood of GMMs over the number of clusters (ICLR Sec. 4, Fig. 5), the stability of
k-means partitions across halves of the data, and the number of clusters chosen from both
(:func:`choose_k`)."""

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm


def _flat(x):
    """(N, F, O) or (N, K) -> (N, K) float array (feature-major flattening)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (2, 3):
        raise ValueError(f"expected bar codes of shape (N, F, O) or (N, K), got {x.shape}")
    return x.reshape(x.shape[0], -1)


def _gmm(n_clusters, random_state, n_init):
    return GaussianMixture(
        n_clusters, covariance_type="spherical", n_init=n_init, random_state=random_state
    )


def fit_clusters(x, method="gmm", n_clusters=2, random_state=0, n_init=5):
    """Cluster bar codes.

    x: (N, F, O) or (N, K). method: "gmm" (spherical covariances) or "kmeans".
    Returns labels (N,) int and centres (n_clusters, ...) shaped like one row of ``x``.
    """
    flat = _flat(x)
    if method == "gmm":
        model = _gmm(n_clusters, random_state, n_init).fit(flat)
        labels, centres = model.predict(flat), model.means_
    elif method == "kmeans":
        model = KMeans(n_clusters, n_init=n_init, random_state=random_state).fit(flat)
        labels, centres = model.labels_, model.cluster_centers_
    else:
        raise ValueError(f"method must be 'gmm' or 'kmeans', got {method!r}")
    return labels, centres.reshape((n_clusters,) + np.shape(x)[1:])


def heldout_scores(x, n_clusters_list, test_fraction=0.2, random_state=0, n_init=4, progress=True):
    """Held-out log-likelihood of each test neuron under a spherical GMM per number of clusters.

    x: (N, F, O) or (N, K). Neurons are split once into train / test (``test_fraction``); each GMM
    is fitted on the training neurons (best of ``n_init`` k-means initialisations: with one, a fit
    that merges two of 10 planted clusters made k = 12 look best) and scores each test neuron.
    progress: a tqdm bar over the numbers of clusters.
    Returns (n_test, len(n_clusters_list)) float: the same neurons in every column (paired).
    """
    train, test = train_test_split(_flat(x), test_size=test_fraction, random_state=random_state)
    return np.stack(
        [
            _gmm(k, random_state, n_init).fit(train).score_samples(test)
            for k in tqdm(list(n_clusters_list), desc="n_clusters", disable=not progress)
        ],
        1,
    )


def heldout_likelihood(x, n_clusters_list, test_fraction=0.2, random_state=0, n_init=4):
    """Mean held-out log-likelihood per neuron (nats) of spherical GMMs, one per number of
    clusters: :func:`heldout_scores` averaged over the test neurons. (len(n_clusters_list),)."""
    return heldout_scores(x, n_clusters_list, test_fraction, random_state, n_init).mean(0)


def stability(x, n_clusters_list, n_pairs=4, random_state=0, progress=True) -> np.ndarray:
    """Reproducibility of the k-means partition at each number of clusters.

    x: (N, F, O) or (N, K). For each of ``n_pairs`` random splits of the neurons into two
    disjoint halves, k-means (4 starts) is fitted on each half and labels every neuron; the
    stability of k is the adjusted Rand index between the two labellings, averaged over the
    splits (1: the same partition from independent data; k = 1 scores 1 by definition).
    Returns (len(n_clusters_list),) float.
    """
    flat = _flat(x)
    rng = np.random.default_rng(random_state)
    ks = list(n_clusters_list)
    out = np.zeros(len(ks))
    for _ in tqdm(range(n_pairs), desc="stability splits", disable=not progress):
        perm = rng.permutation(len(flat))
        halves = perm[: len(flat) // 2], perm[len(flat) // 2 :]
        for i, k in enumerate(ks):
            a, b = (
                KMeans(int(k), n_init=4, random_state=random_state + j).fit(flat[h]).predict(flat)
                for j, h in enumerate(halves)
            )
            out[i] += adjusted_rand_score(a, b) / n_pairs
    return out


#: Mean ARI between halves at or above which a partition counts as reproducible (choose_k).
STABLE_ARI = 0.9

#: The floor of choose_k: one more cluster rules the smaller k out when it gains at least this
#: fraction of the whole held-out gain from k = 1 to the best k ...
FLOOR_GAIN = 0.2
#: ... and at least this many paired standard errors (so that noise cannot set the floor).
FLOOR_SE = 2.0

#: The rule of :func:`choose_k`, as reported by the pipeline.
K_RULE = (
    f"largest k reproducible in random halves (k-means ARI >= {STABLE_ARI}, else the most "
    f"reproducible) from the elbow (next k gains < {FLOOR_GAIN:g} of the total held-out "
    f"log-likelihood gain or < {FLOOR_SE:g} s.e.) to the 1-s.e. k"
)


def choose_k(
    n_clusters_list, scores, stable, floor_gain=FLOOR_GAIN, floor_se=FLOOR_SE
) -> tuple[int, np.ndarray]:
    """The number of clusters chosen from held-out scores (:func:`heldout_scores`, (n_test, K))
    and the stability of each k (:func:`stability`, (K,)).

    Rule (``K_RULE``; validated on planted mixtures in docs/validation/choosing_k.md):
    1. the held-out likelihood bounds k from above: let k* maximise the mean held-out
       log-likelihood; for each k, d_k = the per-neuron difference ll(k*) - ll(k) over the same
       held-out neurons, with standard error se_k = sd(d_k) / sqrt(n); k_ll = the smallest k with
       mean(d_k) <= se_k (the one-standard-error rule). A GMM needs several components for a
       cluster that is not a Gaussian blob (continuous variation within a type, heavy tails), so
       k_ll counts components, not clusters, and over-splits such data;
    2. the likelihood bounds k from below: k_lo = the first k whose next k gains less than
       ``floor_gain`` of the whole gain ll(k*) - ll(k_1), or less than ``floor_se`` paired
       standard errors (the elbow; at most k_ll). A k before it leaves clusters merged that the
       held-out neurons clearly tell apart;
    3. of k_lo <= k <= k_ll, the largest whose partition is reproducible (stability >=
       ``STABLE_ARI``): a split of one continuous cluster lands in different places in
       independent halves of the data, a split between real clusters does not. If none is, the
       most reproducible of them (the smallest on ties).
    Returns (k, se (K,) the s.e. of each mean(d_k)).
    """
    ks = np.asarray(n_clusters_list)
    scores = np.asarray(scores, dtype=np.float64)
    stable = np.asarray(stable, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(ks) or len(scores) < 2:
        raise ValueError(
            f"scores must be (n_test >= 2, {len(ks)}) held-out log-likelihoods, got {scores.shape}"
        )
    if stable.shape != ks.shape:
        raise ValueError(f"stable must be ({len(ks)},) stabilities, one per k, got {stable.shape}")
    d = scores[:, [int(np.argmax(scores.mean(0)))]] - scores
    se = d.std(0, ddof=1) / np.sqrt(len(d))
    k_ll = ks[d.mean(0) <= se].min()
    step = np.diff(scores, axis=1)
    gain = d.mean(0)[0]  # ll(k*) - ll(first k)
    small = (step.mean(0) < floor_gain * gain) | (
        step.mean(0) < floor_se * step.std(0, ddof=1) / np.sqrt(len(step))
    )
    k_lo = min(ks[:-1][small].min() if small.any() else ks[-1], k_ll)
    window = (ks >= k_lo) & (ks <= k_ll)
    ok = window & ((stable >= STABLE_ARI) | (ks == ks.min()))
    if ok.any():
        return int(ks[ok].max()), se
    return int(ks[window][np.argmax(stable[window])]), se
