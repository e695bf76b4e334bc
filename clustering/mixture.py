"""Clustering of aligned bar codes: GMM with spherical covariances or k-means (scikit-learn), the
held-out likelihood of GMMs over the number of clusters (ICLR Sec. 4, Fig. 5), and the number of
clusters chosen from it (:func:`choose_k`)."""

import numpy as np
from sklearn.cluster import KMeans
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


#: The rule of :func:`choose_k`, as reported by the pipeline.
K_RULE = "smallest k within one s.e. of the best held-out log-likelihood (paired over neurons)"


def choose_k(n_clusters_list, scores) -> tuple[int, np.ndarray]:
    """The number of clusters chosen from held-out scores (:func:`heldout_scores`, (n_test, K)).

    Rule (``K_RULE``, the one-standard-error rule applied to the held-out likelihood curve): let
    k* maximise the mean held-out log-likelihood; for each k, d_k = the per-neuron difference
    ll(k*) - ll(k) over the same held-out neurons, with standard error se_k = sd(d_k) / sqrt(n);
    the choice is the smallest k with mean(d_k) <= se_k: the simplest model that the held-out
    neurons cannot tell from the best one. Returns (k, se (K,) the s.e. of each mean(d_k)).
    """
    ks = np.asarray(n_clusters_list)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(ks) or len(scores) < 2:
        raise ValueError(
            f"scores must be (n_test >= 2, {len(ks)}) held-out log-likelihoods, got {scores.shape}"
        )
    best = int(np.argmax(scores.mean(0)))
    d = scores[:, [best]] - scores
    se = d.std(0, ddof=1) / np.sqrt(len(d))
    ok = d.mean(0) <= se
    return int(ks[ok].min()), se
