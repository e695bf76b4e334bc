"""Closed-form checks of the per-neuron measures."""

import numpy as np
import pytest

from twin.metrics import (
    correlation,
    correlation_to_average,
    feve,
    oracle_correlation,
    single_trial_correlation,
)

N_IMAGES, N_REPEATS, N = 400, 10, 3
SIGNAL_SD, NOISE_SD = 1.0, np.array([0.5, 1.0, 2.0])


@pytest.fixture(scope="module")
def repeats():
    """Responses = per-image mean + Gaussian noise of known sd, per neuron."""
    rng = np.random.default_rng(0)
    means = rng.normal(5.0, SIGNAL_SD, size=(N_IMAGES, N))
    image_ids = np.repeat(np.arange(N_IMAGES), N_REPEATS)
    responses = means[image_ids] + rng.normal(size=(len(image_ids), N)) * NOISE_SD
    return means[image_ids], responses, image_ids


def test_correlation_basics():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 2))
    np.testing.assert_allclose(correlation(a, 3 * a + 1), [1, 1])
    np.testing.assert_allclose(correlation(a, -a), [-1, -1])
    np.testing.assert_allclose(correlation(a, np.ones_like(a)), [0, 0])  # constant side -> 0


def test_perfect_prediction_of_means(repeats):
    true_means, responses, ids = repeats
    np.testing.assert_allclose(feve(true_means, responses, ids), 1.0, atol=0.05)
    # Averaging over repeats leaves only noise / sqrt(repeats): corr to average near 1.
    expected = SIGNAL_SD / np.sqrt(SIGNAL_SD**2 + NOISE_SD**2 / N_REPEATS)
    np.testing.assert_allclose(
        correlation_to_average(true_means, responses, ids), expected, atol=0.02
    )
    # Single trials: signal / total sd.
    expected = SIGNAL_SD / np.sqrt(SIGNAL_SD**2 + NOISE_SD**2)
    np.testing.assert_allclose(single_trial_correlation(true_means, responses), expected, atol=0.02)


def test_correlation_to_average_of_the_average_is_one(repeats):
    _, responses, ids = repeats
    np.testing.assert_allclose(correlation_to_average(responses, responses, ids), 1.0)


def test_oracle_correlation_matches_theory(repeats):
    _, responses, ids = repeats
    s2, n2 = SIGNAL_SD**2, NOISE_SD**2
    expected = s2 / np.sqrt((s2 + n2) * (s2 + n2 / (N_REPEATS - 1)))
    np.testing.assert_allclose(oracle_correlation(responses, ids), expected, atol=0.02)


def test_feve_of_constant_and_of_noisy_predictions(repeats):
    true_means, responses, ids = repeats
    constant = np.broadcast_to(responses.mean(0), responses.shape)
    np.testing.assert_allclose(feve(constant, responses, ids), 0.0, atol=0.02)
    # Prediction = mean + independent error of variance e2: FEVE = 1 - e2 / signal variance.
    rng = np.random.default_rng(1)
    error = rng.normal(0, 0.5, size=(N_IMAGES, N))[ids]
    np.testing.assert_allclose(feve(true_means + error, responses, ids), 1 - 0.25, atol=0.05)


def test_repeat_based_measures_need_repeats():
    responses = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match="repeats"):
        oracle_correlation(responses, np.arange(10))
    with pytest.raises(ValueError, match="repeats"):
        feve(responses, responses, np.arange(10))
