"""Two-dimensional t-SNE embedding of (aligned) bar codes with openTSNE, for visualisation only."""

import numpy as np
from openTSNE import TSNE


def tsne_embedding(x, random_state=0, perplexity=30, n_jobs=1):
    """t-SNE of bar codes. x: (N, F, O) or (N, K), N > 3 * perplexity. Returns (N, 2) float."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if flat.shape[0] <= 3 * perplexity:
        raise ValueError(
            f"t-SNE with perplexity {perplexity} needs more than {3 * perplexity} points, "
            f"got {flat.shape[0]}"
        )
    tsne = TSNE(perplexity=perplexity, random_state=random_state, n_jobs=n_jobs)
    return np.asarray(tsne.fit(flat))
