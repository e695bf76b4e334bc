"""Per-neuron predictive performance measures (numpy).

Shapes: predictions and responses (T, N) (trials x neurons); image_ids (T,) groups the
repeats of one image. Every measure returns (N,). Correlations are 0 where either side is
constant.

Agreement with ``neuralpredictors.measures`` (checked in tests/test_neuralpredictors.py): on
data where every image has at least 2 repeats, :func:`single_trial_correlation` equals
``corr(pred, resp, axis=0)``, :func:`correlation_to_average` ``corr`` of the per-image means,
:func:`oracle_correlation` ``oracle_corr_jackknife`` and :func:`feve` ``fev``, to 1e-6: the only
difference there is the eps = 1e-8 that neuralpredictors adds to each standard deviation (with
eps=0 its ``corr`` equals :func:`correlation` to float precision). Images shown once differ:
see :func:`oracle_correlation` and :func:`feve`.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "correlation",
    "single_trial_correlation",
    "correlation_to_average",
    "oracle_correlation",
    "feve",
    "evaluate",
]


def correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per column of two (T, N) arrays: (N,)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a - a.mean(0), b - b.mean(0)
    denom = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    safe = np.where(denom > 0, denom, 1.0)
    return np.where(denom > 0, (a * b).sum(0) / safe, 0.0)


def _group(values: np.ndarray, image_ids: np.ndarray):
    """Unique ids (I,), trial -> group index (T,), per-image mean (I, N), repeat counts (I,)."""
    ids, inverse, counts = np.unique(image_ids, return_inverse=True, return_counts=True)
    sums = np.zeros((len(ids), values.shape[1]))
    np.add.at(sums, inverse, values)
    return ids, inverse, sums / counts[:, None], counts


def single_trial_correlation(predictions: np.ndarray, responses: np.ndarray) -> np.ndarray:
    """Correlation of prediction and response over single trials: (N,)."""
    return correlation(predictions, responses)


def correlation_to_average(predictions, responses, image_ids) -> np.ndarray:
    """Correlation of per-image mean prediction with per-image mean response over repeats: (N,)."""
    _, _, mean_pred, _ = _group(np.asarray(predictions, dtype=np.float64), image_ids)
    _, _, mean_resp, _ = _group(np.asarray(responses, dtype=np.float64), image_ids)
    return correlation(mean_pred, mean_resp)


def oracle_correlation(responses, image_ids) -> np.ndarray:
    """Leave-one-out oracle: correlate each trial with the mean of the other repeats of its
    image, over all trials of images with at least 2 repeats: (N,).

    Images shown once are left out. neuralpredictors' ``oracle_corr_jackknife`` instead counts
    their trials with an oracle of 0 (after a 0/0 warning); on the other images both agree.
    """
    r = np.asarray(responses, dtype=np.float64)
    _, inverse, means, counts = _group(r, image_ids)
    keep = counts[inverse] >= 2
    if not keep.any():
        raise ValueError("oracle correlation needs images with at least 2 repeats")
    n = counts[inverse][:, None]
    loo = (means[inverse] * n - r) / np.maximum(n - 1, 1)
    return correlation(loo[keep], r[keep])


def feve(predictions, responses, image_ids) -> np.ndarray:
    """Fraction of explainable variance explained: (N,).

    1 - (MSE - noise_var) / (total_var - noise_var), with MSE the mean squared error over
    trials, total_var the variance of responses over trials and noise_var the mean over
    images of the unbiased variance across that image's repeats (images with >= 2 repeats).

    Images shown once count in MSE and total_var but not in noise_var; neuralpredictors' ``fev``
    is NaN for every neuron as soon as one image has a single repeat (its ddof=1 variance).
    """
    p = np.asarray(predictions, dtype=np.float64)
    r = np.asarray(responses, dtype=np.float64)
    _, inverse, means, counts = _group(r, image_ids)
    if not (counts >= 2).any():
        raise ValueError("FEVE needs images with at least 2 repeats")
    sq = np.zeros_like(means)
    np.add.at(sq, inverse, (r - means[inverse]) ** 2)
    multi = counts >= 2
    noise_var = (sq[multi] / (counts[multi, None] - 1)).mean(0)
    mse = ((p - r) ** 2).mean(0)
    total_var = r.var(0, ddof=1)
    return 1 - (mse - noise_var) / (total_var - noise_var)


def prediction_scores(predictions: np.ndarray, test) -> dict[str, np.ndarray]:
    """Per-neuron measures (N,) of ``predictions`` (T_test, N) against ``test`` (a ScanData of
    the test tier): {"test_correlation", "correlation_to_average", "feve"}."""
    return {
        "test_correlation": single_trial_correlation(predictions, test.responses),
        "correlation_to_average": correlation_to_average(
            predictions, test.responses, test.image_ids
        ),
        "feve": feve(predictions, test.responses, test.image_ids),
    }


def evaluate(model, scan) -> dict[str, np.ndarray]:
    """All measures of `model` (a Twin) on the test tier of `scan` (a ScanData).

    Returns {"test_correlation", "correlation_to_average", "oracle_correlation", "feve"},
    each (N,), with predictions (`Twin.predict`, at each trial's behaviour where the twin takes
    it) and responses both in recorded units, which FEVE needs. With behaviour, the repeats of
    an image differ in behaviour: their spread counts as noise in FEVE's noise variance, so a
    twin that predicts it from the behaviour can score above 1.
    """
    test = scan.select("test")
    if len(test.responses) == 0:
        raise ValueError(f"scan {scan.name!r} has no test-tier trials")
    pred = model.predict(model.standardize(test.images), scan.name, **model.trial_inputs(test))
    return {
        **prediction_scores(pred, test),
        "oracle_correlation": oracle_correlation(test.responses, test.image_ids),
    }
