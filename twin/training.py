"""Fitting a Twin: model factory, Poisson loss, Adam with a plateau, cosine or anneal
learning-rate schedule (`twin.presets.TrainConfig`), and the best validation epoch kept."""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import ScanData
from .metrics import correlation
from .model import Twin
from .outputs import OUTPUTS
from .presets import Preset, TrainConfig, get_preset

__all__ = [
    "TrainConfig",
    "autocast",
    "build_model",
    "fit",
    "poisson_loss",
    "precision",
    "resolve_device",
]


def resolve_device(device: str | None) -> torch.device:
    """None -> cuda if available, else cpu."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively: CUDA, or a CPU with AMX or AVX-512 BF16
    (Intel Sapphire Rapids and later, AMD Zen 4 and later). Elsewhere bfloat16 is emulated and
    slower than float32."""
    if device.type == "cuda":
        return True
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return device.type == "cpu" and any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def precision(device: torch.device, requested: str = "auto") -> str:
    """The precision the training steps run in on `device`: `requested` ("float32" or
    "bfloat16"), or for "auto" bfloat16 where it is native (:func:`native_bfloat16`), else
    float32."""
    if requested != "auto":
        return requested
    return "bfloat16" if native_bfloat16(device) else "float32"


def autocast(device: torch.device, requested: str = "auto"):
    """The mixed precision the training steps run under (:func:`precision`): bfloat16 autocast
    (no GradScaler: bfloat16 has float32's exponent range) or none (float32). Parameters,
    gradients, the optimizer, the loss and every prediction outside training (validation,
    evaluation, in-silico experiments) stay float32. On this project's 2-core CPU, "auto" trains
    the cpu preset about 1.5x faster to the same validation correlation (docs/benchmarks.md,
    "Training in bfloat16 on the CPU")."""
    if precision(device, requested) == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def poisson_loss(rates: torch.Tensor, responses: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Poisson negative log-likelihood (without log y!) summed over neurons, mean over trials."""
    return (rates - responses * torch.log(rates + eps)).sum(1).mean()


def build_model(preset, scans: list[ScanData], seed: int = 0) -> Twin:
    """A Twin for `scans`, initialised with `seed`.

    preset: a preset name (`twin.presets`), a `Preset`, or a dict with "core", "readout" and
    optionally "downsample", "output" (e.g. a `Twin.config`), "behavior" and
    "standardize_responses" (both default True: a ModelConfig's config). Sets input_mean/std from
    the train-tier pixels of all scans, each readout's ``response_scale``
    (`ScanData.response_scale`, or ones when not standardizing), each scan's behaviour
    standardisation (`twin.behavior`; scans with behaviour or pupil centre, unless "behavior" is
    False) and each readout's bias so that the initial mean rate matches the neuron's train mean.
    """
    if isinstance(preset, str):
        preset = get_preset(preset)
    if isinstance(preset, Preset):
        arch = {
            "core": preset.core,
            "readout": preset.readout,
            "downsample": preset.downsample,
            "output": preset.output,
        }
    else:
        arch = preset
    shapes = {s.image_shape for s in scans}
    if len(shapes) != 1:
        raise ValueError(f"all scans must share one image shape, got {sorted(shapes)}")
    torch.manual_seed(seed)
    model = Twin(
        arch["core"],
        arch["readout"],
        {s.name: s.n_neurons for s in scans},
        shapes.pop(),
        arch.get("downsample", 1),
        arch.get("output", "elu1"),
        _behavior_spec(scans) if arch.get("behavior", True) else None,
    )
    inverse_output = OUTPUTS[model.output_name][1]
    pixels = np.concatenate([s.images[s.mask("train")].ravel() for s in scans]).astype(np.float64)
    if pixels.size == 0:
        raise ValueError("no train-tier trials in any scan")
    model.input_mean.fill_(pixels.mean())
    model.input_std.fill_(max(pixels.std(), 1e-6))
    standardize = arch.get("standardize_responses", True)
    with torch.no_grad():
        for s in scans:
            readout, train = model.readouts[s.name], s.select("train")
            scale = s.response_scale() if standardize else np.ones(s.n_neurons, np.float32)
            readout.response_scale.copy_(torch.from_numpy(scale))
            mean_rate = train.responses.mean(0) / scale
            readout.bias.copy_(torch.from_numpy(inverse_output(mean_rate)).float())
            if s.name in model.behavior:
                model.behavior[s.name].fit(train.behavior, train.pupil_center)
    return model


def _behavior_spec(scans: list[ScanData]) -> dict:
    """{scan: [B, has pupil centre]} of the scans recorded with behaviour or pupil centre."""
    return {
        s.name: [0 if s.behavior is None else s.behavior.shape[1], s.pupil_center is not None]
        for s in scans
        if s.behavior is not None or s.pupil_center is not None
    }


def _tier_tensors(
    model: Twin, scan: ScanData, tier: str, device
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(standardized images, STANDARDIZED responses, {the twin's behaviour inputs}) of a tier."""
    part = scan.select(tier)
    x = torch.from_numpy(model.standardize(part.images)).to(device)
    y = torch.from_numpy(part.responses) / model.response_scale(scan.name).cpu()
    extra = {k: torch.from_numpy(v).to(device) for k, v in model.trial_inputs(part).items()}
    return x, y.to(device), extra


def _validation_correlation(model: Twin, val: dict, batch_size: int) -> float:
    corrs = [
        correlation(model.predict(x, name, batch_size, **extra), y.cpu().numpy())
        for name, (x, y, extra) in val.items()
    ]
    return float(np.concatenate(corrs).mean())


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless minibatch indices: successive random permutations of range(n)."""
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield perm[i : i + batch_size]


def _cosine(optimizer, config: TrainConfig, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step rate factor: linear warm-up over `warmup_epochs`, then cosine to 0 at the end."""
    warm = config.warmup_epochs * steps
    decay = max(config.max_epochs * steps - warm, 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(step - warm, decay) / decay))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _anneal(optimizer, config: TrainConfig, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step rate factor: 1, then linear to 0 over the last `anneal_epochs` epochs."""
    total = config.max_epochs * steps
    tail = max(min(config.anneal_epochs, config.max_epochs) * steps, 1)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, max(total - step, 0) / tail)
    )


SCHEDULERS = {"cosine": _cosine, "anneal": _anneal}


def _train_epoch(model, train, batches, optimizer, scheduler, config, steps, mixed, bar):
    """`steps` optimizer steps, each on one minibatch of every scan; returns the summed loss."""
    model.train()
    total = 0.0
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = model.core.regularizer() * config.core_reg
        for name, (x, y, extra) in train.items():
            idx = next(batches[name]).to(x.device)
            with mixed:
                rates = model(x[idx], name, **{k: v[idx] for k, v in extra.items()})
            loss = (
                loss
                + poisson_loss(rates.float(), y[idx])
                + config.readout_reg * model.readouts[name].regularizer()
            )
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.item()
        bar.update()
    return total


def fit(model: Twin, scans: list[ScanData], config: TrainConfig, progress: bool = True) -> dict:
    """Train `model` on the train tiers of `scans`, early-stopping on validation correlation.

    The best weights (highest mean single-trial validation correlation over all neurons)
    are restored at the end. Returns a history dict: per-epoch lists "epoch", "train_loss",
    "val_corr", "lr", and "initial_val_corr", "best_val_corr", "best_epoch", "seconds",
    "seconds_per_step" (wall time incl. validation / optimizer steps), "device", "precision"
    (of the training steps, `precision`).
    """
    device = resolve_device(config.device)
    model.to(device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    train = {s.name: _tier_tensors(model, s, "train", device) for s in scans}
    val = {s.name: _tier_tensors(model, s, "validation", device) for s in scans}
    if any(len(x) == 0 for x, *_ in (*train.values(), *val.values())):
        raise ValueError("every scan needs train and validation trials")
    batches = {
        name: _batches(len(x), config.batch_size, generator) for name, (x, *_) in train.items()
    }
    steps = math.ceil(max(len(x) for x, *_ in train.values()) / config.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    make_scheduler = SCHEDULERS.get(config.schedule)
    scheduler = make_scheduler(optimizer, config, steps) if make_scheduler else None
    mixed = autocast(device, config.precision)

    best = _validation_correlation(model, val, 4 * config.batch_size)
    history = {
        "epoch": [],
        "train_loss": [],
        "val_corr": [],
        "lr": [],
        "initial_val_corr": best,
        "best_val_corr": best,
        "best_epoch": 0,
        "device": str(device),
        "precision": precision(device, config.precision),
    }
    best_state = copy.deepcopy(model.state_dict())
    wait, decays, n_steps, start = 0, 0, 0, time.perf_counter()
    bar = tqdm(total=config.max_epochs * steps, disable=not progress, desc="fit", unit="step")
    for epoch in range(1, config.max_epochs + 1):
        total = _train_epoch(model, train, batches, optimizer, scheduler, config, steps, mixed, bar)
        lr = optimizer.param_groups[0]["lr"]
        n_steps += steps
        corr = _validation_correlation(model, val, 4 * config.batch_size)
        for key, value in zip(
            ("epoch", "train_loss", "val_corr", "lr"), (epoch, total / steps, corr, lr)
        ):
            history[key].append(value)
        bar.set_postfix(
            epoch=epoch, loss=f"{total / steps:.3f}", val_corr=f"{corr:.3f}", lr=f"{lr:.1e}"
        )
        if corr > history["best_val_corr"] + config.tolerance:
            history["best_val_corr"], history["best_epoch"] = corr, epoch
            best_state, wait = copy.deepcopy(model.state_dict()), 0
            continue
        if scheduler is not None:
            continue
        wait += 1
        if wait >= config.patience:
            model.load_state_dict(best_state)
            if decays >= config.lr_decay_steps:
                break
            decays, wait = decays + 1, 0
            for group in optimizer.param_groups:
                group["lr"] *= config.lr_decay_factor
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    history["seconds"] = time.perf_counter() - start
    history["seconds_per_step"] = history["seconds"] / max(n_steps, 1)
    return history
