"""Cluster confusion matrix (ICLR Sec. 5.2, Fig. 7) and its greedy arrangement into blocks.

Element (p, q) is the correlation, over the training images, between the predicted responses of two
hypothetical neurons whose readouts are the cluster means p and q, "accounting for potential
differences in canonical orientation across clusters". Our choice: the maximum over the O cyclic
shifts of cluster q's mean (rotations by multiples of 2*pi/O, exact for the rotation-equivariant
core) of the correlation with cluster p's unshifted mean; the matrix is then symmetrised as
(C + C.T) / 2, because the training images are not rotation-invariant and the two directions can
differ slightly. The diagonal is 1.
"""

import numpy as np


def elu1(x):
    """ELU + 1, the default positive output nonlinearity. x: any shape -> same shape."""
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


def _zscore(r):
    """Standardise over images (axis 0); constant responses become 0."""
    centred = r - r.mean(0)
    sd = centred.std(0)
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > 0)


def cluster_confusion(features, centres, nonlinearity=elu1):
    """Cluster confusion matrix.

    features: (n_images, F, O) core output at one spatial location (e.g. the canvas centre).
    centres: (k, F, O) cluster means (aligned bar codes). nonlinearity: elementwise, positive.
    Returns (k, k) symmetric correlations: max over cyclic shifts s of
    corr_images(f(<c_p, phi>), f(<roll(c_q, s), phi>)), symmetrised.
    """
    features, centres = np.asarray(features, float), np.asarray(centres, float)
    if features.ndim != 3 or centres.ndim != 3 or features.shape[1:] != centres.shape[1:]:
        raise ValueError(
            f"features (n_images, F, O) and centres (k, F, O) must agree, "
            f"got {features.shape} and {centres.shape}"
        )
    n_orient = centres.shape[-1]
    shifted = np.stack([np.roll(centres, s, axis=-1) for s in range(n_orient)], 1)  # (k, O, F, O)
    responses = nonlinearity(np.einsum("nfo,ksfo->nks", features, shifted))  # (n_images, k, O)
    z = _zscore(responses)
    corr = np.einsum("np,nqs->pqs", z[:, :, 0], z) / len(features)  # (k, k, O)
    c = corr.max(-1)
    c = (c + c.T) / 2
    np.fill_diagonal(c, 1.0)
    return c


def greedy_blocks(c, threshold=0.5):
    """Greedy rearrangement of a correlation matrix into blocks.

    c: (k, k) symmetric. A block starts from the most correlated pair of unassigned clusters (or,
    when no pair reaches ``threshold``, from a single remaining cluster) and grows by the unassigned
    cluster with the largest mean correlation to the block's members while that mean is
    >= ``threshold``. Returns ``order`` (k,) (blocks concatenated, members in order of joining) and
    ``blocks`` (k,) block index of each cluster in the original indexing.
    """
    c = np.asarray(c, float)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"c must be a square matrix, got shape {c.shape}")
    k = c.shape[0]
    blocks = np.full(k, -1)
    order = []
    off = c.copy()
    np.fill_diagonal(off, -np.inf)
    while (blocks < 0).any():
        free = np.flatnonzero(blocks < 0)
        sub = off[np.ix_(free, free)]
        i, j = np.unravel_index(np.argmax(sub), sub.shape)
        members = [free[i], free[j]] if len(free) > 1 and sub[i, j] >= threshold else [free[0]]
        while True:
            rest = np.setdiff1d(free, members)
            if not len(rest):
                break
            score = c[np.ix_(rest, members)].mean(1)
            if score.max() < threshold:
                break
            members.append(rest[np.argmax(score)])
        blocks[members] = blocks.max() + 1
        order.extend(members)
    return np.array(order), blocks
