"""Pipeline parameters: a preset (``cpu`` or ``paper``) overridden by a TOML file.

Every parameter, its default per preset and its meaning is listed in :data:`PARAMETERS`;
``v1twin populate --config FILE`` reads a file such as::

    [model]
    max_epochs = 20
    [clustering]
    method = "gmm"
    n_clusters = 10

An unknown section or key, or a value of the wrong type, is refused with an error that names
it, before anything runs.
"""

from __future__ import annotations

import tomllib
from pathlib import Path


def _train_defaults(key: str) -> tuple:
    """(cpu, paper) defaults of a training parameter: the twin's presets are the one source."""
    from twin.presets import get_preset

    return tuple(getattr(get_preset(name).train, key) for name in ("cpu", "paper"))


# section -> key -> (cpu default, paper default, help)
PARAMETERS: dict[str, dict[str, tuple]] = {
    "model": {
        "preset": (
            "cpu",
            "paper",
            "twin.presets architecture: 'cpu' (small core) or 'paper' (16x8, kernels 13,5,5)",
        ),
        "canvas": (
            [36, 64],
            [36, 64],
            "[H, W] pixels the twin sees; stored images are area-averaged onto it (same aspect)",
        ),
        **{
            key: (*_train_defaults(key), text)
            for key, text in (
                (
                    "max_epochs",
                    "upper bound on training epochs (early stopping on validation correlation)",
                ),
                (
                    "schedule",
                    "learning rate: 'anneal' (constant, then linear decay to 0 over the last "
                    "anneal_epochs), 'cosine' (1 warm-up epoch, then cosine decay to 0 at "
                    "max_epochs) or 'plateau' (decay when validation stalls)",
                ),
                ("anneal_epochs", "'anneal' only: epochs of the final linear decay"),
                ("patience", "'plateau' only: epochs without improvement before a decay"),
                ("lr", "peak Adam learning rate"),
                ("batch_size", "trials per scan per step"),
                ("seed", "seeds initialisation and batch order (the first of n_seeds)"),
                (
                    "precision",
                    "of the training steps: 'auto' (bfloat16 on CUDA and on CPUs with AMX or "
                    "AVX-512 BF16, else float32), 'float32' or 'bfloat16'",
                ),
            )
        },
        "glm_alphas": (
            16,
            48,
            "L2 strengths the GLM baseline chooses from per neuron, log-spaced in [0.1, 5] (DT: "
            "48); its cost grows with their number (16 predict as well: docs/benchmarks.md)",
        ),
        "standardize_responses": (
            True,
            True,
            "train on each neuron's responses / its train-tier s.d. (floor: 1 % of the mean s.d., "
            "as neuralpredictors' NeuroNormalizer); metrics and predictions in recorded units",
        ),
        "behavior": (
            True,
            True,
            "scans with behaviour / pupil centre: behaviour as core inputs, pupil centre drives "
            "a readout shifter (Sensorium baseline); in-silico at the training means",
        ),
        "n_seeds": (
            1,
            3,
            "twins trained, with seeds seed, seed+1, ...: each index's across-seed reliability "
            "(analysis.IndexReliability; unknown with 1)",
        ),
    },
    "alignment": {
        "n_betas": (5, 20, "beta values, log-spaced in [0.001, 10] (ICLR: 20)"),
        "min_temperature": (5.0, 5.0, "fits with T at or below this are not eligible (ICLR: 5)"),
        "max_iter": (200, 2000, "Adam steps per beta (early stopping may end sooner)"),
        "refine_iter": (
            200,
            500,
            "Adam steps on the exact Eq. 3 after choosing beta (0: the paper's angles as they are)",
        ),
        "random_state": (0, 0, "seeds pair sampling"),
    },
    "clustering": {
        "method": (
            "kmeans",
            "kmeans",
            "'kmeans' (DT: 50 clusters) or 'gmm' (spherical covariances)",
        ),
        "n_clusters": (
            0,
            0,
            "number of clusters; 0: chosen (held-out likelihood + stability, clustering.choose_k)",
        ),
        "seed": (0, 0, "random state of the clustering"),
        "heldout_max_k": (12, 60, "held-out GMM likelihood is computed for k = 1..heldout_max_k"),
    },
    "insilico": {
        "grid": (
            "cpu",
            "paper",
            "Gabor/DoG search grid size: 'cpu' (hundreds of stimuli) or 'paper'",
        ),
        "pixels_per_degree": (
            0.0,
            0.0,
            "stored-image pixels per degree of visual angle; 0: Sensorium's (insilico.units)",
        ),
        "refine": (4, 4, "per neuron, the fast search's best stimuli re-scored directly (0: none)"),
        "border_refine": (
            16,
            16,
            "per border neuron (readout near the canvas edge), the same (-1: the whole grid)",
        ),
        "mei_steps": (100, 1000, "gradient-ascent steps per MEI"),
        "mei_norm": (33.0, 33.0, "L2 norm of every MEI, standardized units x degrees"),
        "energies": (
            [13.0, 26.0, 52.0],
            [6.5, 13.0, 26.0, 52.0, 104.0],
            "L2 norms for Gabor vs DoG vs MEI (DT Eq. 15-17), standardized units x degrees",
        ),
    },
}

PRESETS = ("cpu", "paper")


class ConfigError(ValueError):
    """A config file with an unknown key or a value of the wrong type."""


def defaults(preset: str = "cpu") -> dict[str, dict]:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {list(PRESETS)}")
    column = PRESETS.index(preset)
    return {
        section: {key: spec[column] for key, spec in keys.items()}
        for section, keys in PARAMETERS.items()
    }


def load(path: str | Path | None = None, preset: str = "cpu") -> dict[str, dict]:
    """The preset's parameters, overridden by the TOML file at ``path`` (if any)."""
    config = defaults(preset)
    if path is None:
        return config
    path = Path(path)
    try:
        overrides = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: no such file") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    for section, values in overrides.items():
        if section not in PARAMETERS:
            raise ConfigError(f"{path}: unknown section [{section}]; known: {sorted(PARAMETERS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key, value in values.items():
            if key not in PARAMETERS[section]:
                raise ConfigError(
                    f"{path}: unknown key {section}.{key}; known: {sorted(PARAMETERS[section])}"
                )
            config[section][key] = _checked(path, section, key, value, config[section][key])
    _check_choices(path, config["model"])
    return config


def _check_choices(path: Path, model: dict) -> None:
    """model.schedule and model.precision must be among the trainer's choices."""
    from twin.presets import PRECISIONS, SCHEDULES

    for key, choices in (("schedule", SCHEDULES), ("precision", PRECISIONS)):
        if model[key] not in choices:
            raise ConfigError(f"{path}: model.{key} = {model[key]!r}: choose from {list(choices)}")


def _checked(path: Path, section: str, key: str, value, default):
    """The value, if it has the default's type (an int is accepted for a float)."""
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is list:
        kind = int if all(isinstance(v, int) for v in default) else float
        number = (int,) if kind is int else (int, float)
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, number) and not isinstance(v, bool) for v in value)
        ):
            return [kind(v) for v in value]
        raise ConfigError(
            f"{path}: {section}.{key} = {value!r}: expected a non-empty list of {kind.__name__}s"
        )
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        raise ConfigError(
            f"{path}: {section}.{key} = {value!r} is a {type(value).__name__}, expected "
            f"{expected.__name__}"
        )
    return value


def describe() -> str:
    """A table of every parameter with both presets' defaults, for ``--help`` and the README."""
    lines = [f"{'parameter':28} {'cpu':>14} {'paper':>14}  meaning"]
    for section, keys in PARAMETERS.items():
        for key, (cpu, paper, text) in keys.items():
            lines.append(f"{section + '.' + key:28} {str(cpu):>14} {str(paper):>14}  {text}")
    return "\n".join(lines)
