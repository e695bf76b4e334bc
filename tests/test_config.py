"""Pipeline config: presets, TOML overrides, and clear errors for unknown keys and wrong types."""

from __future__ import annotations

import pytest

from v1twin import cli, config


def _write(tmp_path, text):
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return path


def test_presets_differ_where_documented():
    cpu, paper = config.defaults("cpu"), config.defaults("paper")
    assert cpu["model"]["preset"] == "cpu" and paper["model"]["preset"] == "paper"
    assert paper["alignment"]["n_betas"] == 20  # the ICLR sweep
    assert set(cpu) == set(config.PARAMETERS)


def test_overrides_apply_and_ints_count_as_floats(tmp_path):
    path = _write(tmp_path, "[clustering]\nmethod = 'gmm'\nn_clusters = 9\n[model]\nlr = 1\n")
    cfg = config.load(path, "cpu")
    assert cfg["clustering"]["method"] == "gmm"
    assert cfg["clustering"]["n_clusters"] == 9
    assert cfg["model"]["lr"] == 1.0 and isinstance(cfg["model"]["lr"], float)
    assert cfg["alignment"] == config.defaults("cpu")["alignment"]


def test_canvas_ppd_and_k_defaults(tmp_path):
    cpu = config.defaults("cpu")
    assert cpu["model"]["canvas"] == [36, 64]  # the Sensorium baseline's 144 x 256 / 4
    assert cpu["clustering"]["n_clusters"] == 0  # k chosen from the held-out likelihood
    assert cpu["insilico"]["pixels_per_degree"] == 0.0  # the Sensorium screen's
    path = _write(tmp_path, "[model]\ncanvas = [72, 128]\n[insilico]\npixels_per_degree = 2\n")
    cfg = config.load(path)
    assert cfg["model"]["canvas"] == [72, 128] and all(
        type(v) is int for v in cfg["model"]["canvas"]
    )
    assert cfg["insilico"]["pixels_per_degree"] == 2.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("[clustering]\nn_cluster = 9\n", "unknown key clustering.n_cluster"),
        ("[clusterin]\nn_clusters = 9\n", "unknown section [clusterin]"),
        ("[clustering]\nn_clusters = '9'\n", "clustering.n_clusters = '9' is a str, expected int"),
        ("[model]\nmax_epochs = 2.5\n", "model.max_epochs = 2.5 is a float, expected int"),
        ("[model]\nmax_epochs = true\n", "model.max_epochs = True is a bool"),
        ("[model]\nschedule = 'linear'\n", "model.schedule = 'linear': choose from"),
        ("[model]\nprecision = 'float16'\n", "model.precision = 'float16': choose from"),
        ("[insilico]\nenergies = ['a']\n", "insilico.energies"),
        (
            "[model]\ncanvas = [36.5, 64]\n",
            "model.canvas = [36.5, 64]: expected a non-empty list of ints",
        ),
        ("[model\n", "not valid TOML"),
    ],
)
def test_bad_config_is_refused_with_the_key_named(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(config.ConfigError, match=pytest.importorskip("re").escape(message)):
        config.load(path)


def test_cli_refuses_bad_config_before_touching_the_database(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DJ_HOST", "127.0.0.1")  # would fail loudly if it tried to connect
    monkeypatch.setenv("DJ_PORT", "1")
    monkeypatch.setenv("DJ_USER", "nobody")
    monkeypatch.setenv("DJ_PASS", "x")
    path = _write(tmp_path, "[model]\nbogus = 1\n")
    assert cli.main(["populate", "--config", str(path)]) == 2
    assert "unknown key model.bogus" in capsys.readouterr().err


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(config.ConfigError, match="nope.toml"):
        config.load(tmp_path / "nope.toml")


def test_glm_alphas_default_keeps_the_model_hash(db, tmp_path):
    """[model] glm_alphas: DT's 48 in the paper preset, which leaves the stored config (and so
    every existing model_hash) as it was; fewer (the cpu preset's 16) give another key and that
    many log-spaced alphas."""
    import numpy as np

    from schemas.model import ModelConfig, glm_alphas
    from twin.glm import DT_ALPHAS

    assert config.defaults("paper")["model"]["glm_alphas"] == len(DT_ALPHAS) == 48
    assert config.defaults("cpu")["model"]["glm_alphas"] == 16
    plain = ModelConfig.add("cpu")
    assert ModelConfig.add("cpu", glm_alphas=48) == plain
    assert "glm_alphas" not in (ModelConfig & plain).fetch1("config")
    few = ModelConfig.add("cpu", glm_alphas=4)
    assert few != plain
    alphas = glm_alphas((ModelConfig & few).fetch1("config"))
    np.testing.assert_allclose(alphas, [0.1, 0.1 * 50 ** (1 / 3), 0.1 * 50 ** (2 / 3), 5.0])
    path = _write(tmp_path, "[model]\nglm_alphas = 4\n")
    assert config.load(path)["model"]["glm_alphas"] == 4


def test_training_precision_auto_keeps_the_model_hash(db):
    """[model] precision: "auto" is not stored (existing model_hashes stay), another value is,
    and a trained row of it would say so; an unknown one is refused before any insert."""
    from schemas.model import ModelConfig

    assert config.defaults("cpu")["model"]["precision"] == "auto"
    plain = ModelConfig.add("cpu")
    assert ModelConfig.add("cpu", precision="auto") == plain
    assert "precision" not in (ModelConfig & plain).fetch1("config")["train"]
    exact = ModelConfig.add("cpu", precision="float32")
    assert exact != plain
    assert (ModelConfig & exact).fetch1("config")["train"]["precision"] == "float32"
    before = len(ModelConfig())
    with pytest.raises(ValueError, match="unknown precision"):
        ModelConfig.add("cpu", precision="fp8")
    assert len(ModelConfig()) == before
