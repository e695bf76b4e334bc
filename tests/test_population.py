"""Population specs of the virtual V1: proportions, ranges, TOML files and their errors."""

import numpy as np
import pytest
import torch

from simulator import VirtualV1, natural_images
from simulator.population import POPULATIONS, Population, PopulationError, load_population

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_types_follow_proportions():
    pop = Population(types={"simple": 3, "dog": 1, "complex": 1})
    types = pop.draw_types(50, np.random.default_rng(0))
    counts = {t: int((types == t).sum()) for t in ("simple", "dog", "complex")}
    assert counts == {"simple": 30, "dog": 10, "complex": 10}


def test_equal_proportions_round_robin_remainder():
    """Equal proportions, N not a multiple: the first types get the extra neuron."""
    types = Population().draw_types(8, np.random.default_rng(0))
    assert sorted(types) == sorted(["simple", "complex", "simple_surround", "complex_cross",
                                    "dog", "contrast_energy", "simple", "complex"])  # fmt: skip


def test_strengths_strong_in_own_type_only():
    pop = POPULATIONS["coarse_noisy"]
    model = VirtualV1(40, seed=1, population=pop)
    sur = model.types == "simple_surround"
    lo, hi = pop.ranges("strong")["surround"]
    assert np.all((model.surround_strength[sur] >= lo) & (model.surround_strength[sur] <= hi))
    wlo, whi = pop.ranges("weak")["surround"]
    assert np.all(model.surround_strength[~sur] <= whi)
    assert set(model.types) == set(pop.types)


@pytest.mark.parametrize("name", sorted(POPULATIONS))
def test_named_population_rates_match_targets(name):
    """Each named population builds, and its calibrated mean rate on natural images is the
    population's target mean (which sets its noise level)."""
    pop = POPULATIONS[name]
    model = VirtualV1(12, seed=2, population=pop)
    raw = natural_images(600, seed=[2, 7919])  # the calibration images
    rates = model.rates((raw - raw.mean()) / raw.std())
    np.testing.assert_allclose(rates.mean(0), model.target_mean, rtol=1e-3)
    lo, hi = pop.target_mean
    assert np.all((model.target_mean >= lo) & (model.target_mean <= hi))
    assert torch.isfinite(model.filters).all()


def test_sf_follows_population():
    fine = VirtualV1(12, seed=0, population="fine")
    default = VirtualV1(12, seed=0)
    assert fine.spatial_frequencies.min() > default.spatial_frequencies.max() * 0.9
    assert np.median(fine.spatial_frequencies) > np.median(default.spatial_frequencies)


def test_toml_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        "base_sf = 0.09\ntarget_mean = [0.5, 2.0]\n[types]\nsimple = 2\ndog = 1\n"
        "[strong]\nsurround = [1.0, 3.0]\n"
    )
    pop = load_population(path)
    assert pop.name == "mine" and pop.base_sf == 0.09 and pop.target_mean == (0.5, 2.0)
    assert pop.ranges("strong")["surround"] == (1.0, 3.0)
    assert pop.ranges("strong")["cross"] == Population().ranges("strong")["cross"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("bogus = 1\n", ["bogus"]),
        ("[types]\npyramidal = 1\n", ["pyramidal"]),
        ("[weak]\ninhibition = [0, 1]\n", ["inhibition"]),
        ("target_mean = [3.0, 1.0]\n", ["target_mean"]),
        ("base_sf = 0.2\n", ["base_sf"]),
        ("types = [\n", ["TOML"]),
    ],
)
def test_bad_toml_names_file_and_key(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PopulationError) as err:
        load_population(path)
    for word in [str(path), *words]:
        assert word in str(err.value)


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(PopulationError, match="nonexistent"):
        load_population("nonexistent")
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        load_population(tmp_path / "missing.toml")


def test_cli_bad_population_writes_nothing(tmp_path, capsys):
    from v1twin.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[types]\nsimple = -1\n")
    out = tmp_path / "out"
    assert main(["simulate", "--out", str(out), "--population", str(bad), "--neurons", "6"]) == 2
    assert str(bad) in capsys.readouterr().err
    assert not out.exists()
