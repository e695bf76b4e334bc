"""Bar codes to groups: rotation alignment (ICLR 2020 Eq. 2-5), GMM / k-means clustering, cluster
confusion matrix with greedy blocks, and t-SNE embedding. NumPy, PyTorch,
scikit-learn, openTSNE."""

from .alignment import CyclicAligner, energy_angles, pairwise_mean, select_fit
from .confusion import cluster_confusion, elu1, greedy_blocks
from .embedding import tsne_embedding
from .mixture import (
    K_RULE,
    choose_k,
    fit_clusters,
    heldout_likelihood,
    heldout_scores,
    stability,
)
from .rotation import as_barcodes, relaxed_rotate, relaxed_rotation_matrix, rotate, rotation_matrix

__all__ = [
    "CyclicAligner",
    "energy_angles",
    "pairwise_mean",
    "select_fit",
    "cluster_confusion",
    "elu1",
    "greedy_blocks",
    "tsne_embedding",
    "K_RULE",
    "choose_k",
    "fit_clusters",
    "heldout_likelihood",
    "heldout_scores",
    "stability",
    "as_barcodes",
    "relaxed_rotate",
    "relaxed_rotation_matrix",
    "rotate",
    "rotation_matrix",
]
