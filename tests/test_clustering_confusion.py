"""Cluster confusion matrix and greedy block arrangement (ICLR Sec. 5.2, Fig. 7)."""

import numpy as np
from sklearn.metrics import adjusted_rand_score

from clustering.confusion import cluster_confusion, elu1, greedy_blocks


def planted(sizes=(4, 3, 5, 1, 2), within=0.8, between=0.1, jitter=0.08, seed=0):
    """Symmetric correlation matrix with known blocks, rows and columns permuted at random."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    c = np.where(truth[:, None] == truth[None], within, between)
    noise = rng.uniform(-jitter, jitter, c.shape)
    c = c + (noise + noise.T) / 2
    np.fill_diagonal(c, 1.0)
    perm = rng.permutation(len(truth))
    return c[np.ix_(perm, perm)], truth[perm]


def test_greedy_blocks_recover_planted_blocks():
    c, truth = planted()
    order, blocks = greedy_blocks(c, threshold=0.5)
    assert sorted(order) == list(range(len(truth)))
    assert adjusted_rand_score(truth, blocks) == 1.0
    runs = blocks[order]
    assert np.all(np.diff(runs) >= 0)  # each block contiguous in the order
    assert blocks.max() + 1 == 5


def test_greedy_blocks_threshold_matters():
    c, truth = planted()
    _, blocks = greedy_blocks(c, threshold=0.05)  # below the between-block level: fewer blocks
    assert blocks.max() + 1 < 5
    _, blocks = greedy_blocks(c, threshold=0.95)  # above the within-block level: singletons
    assert blocks.max() + 1 == len(truth)


def test_confusion_ignores_canonical_orientation():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((2000, 3, 8))
    a, b = rng.standard_normal((2, 3, 8))
    centres = np.stack([a, np.roll(a, 3, axis=-1), b])  # cluster 1 = cluster 0 rotated by 3 steps
    c = cluster_confusion(features, centres)
    assert c.shape == (3, 3)
    np.testing.assert_allclose(c, c.T)
    np.testing.assert_allclose(np.diag(c), 1.0)
    assert c[0, 1] > 0.999  # same function in another orientation
    assert abs(c[0, 2]) < 0.5  # different functions
    unshifted = np.corrcoef(elu1(features.reshape(2000, -1) @ centres[[0, 1]].reshape(2, -1).T).T)[
        0, 1
    ]
    assert unshifted < 0.9  # without accounting for orientation they would look different


def test_elu1_is_positive_and_continuous():
    x = np.linspace(-5, 5, 101)
    y = elu1(x)
    assert np.all(y > 0) and np.allclose(elu1(np.array([0.0, 1.0])), [1.0, 2.0])
    assert np.max(np.abs(np.diff(y))) < 0.2
