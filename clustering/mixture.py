"""Clustering of aligned bar codes: GMM with spherical covariances or k-means (scikit-learn), and
the held-out likelihood of GMMs over the number of clusters (ICLR Sec. 4, Fig. 5)."""

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


def heldout_likelihood(
    x, n_clusters_list, test_fraction=0.2, random_state=0, n_init=1, progress=True
):
    """Mean held-out log-likelihood per neuron of spherical GMMs, one per number of clusters.

    x: (N, F, O) or (N, K). Neurons are split once into train / test (``test_fraction``); each GMM
    is fitted on the training neurons and scored on the test neurons (nats per neuron).
    progress: a tqdm bar over the numbers of clusters. Returns (len(n_clusters_list),) float.
    """
    train, test = train_test_split(_flat(x), test_size=test_fraction, random_state=random_state)
    return np.array(
        [
            _gmm(k, random_state, n_init).fit(train).score(test)
            for k in tqdm(list(n_clusters_list), desc="n_clusters", disable=not progress)
        ]
    )
