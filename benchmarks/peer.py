"""Benchmark: the v1twin twin beside the field's Sensorium baseline on the same simulated data.

Both models are fitted to the same ``simulator.simulate_scans`` scans (defaults as
benchmarks/fit.py: 2 scans x 300 neurons, 4000 train + 500 validation trials, 100 test images x
10 repeats) and scored by one implementation (``twin.metrics``) on the test tier:

* twin: the "cpu" preset, ``twin.training.fit``;
* Sensorium baseline (neuralpredictors 0.3, ``v1twin[neuralpredictors]``): the 2022 Sensorium
  competition's ``stacked_core_full_gauss_readout``: a 4-layer depth-separable ``Stacked2dCore``
  (64 channels, 9 px input / 7 px hidden kernels, unpadded input), a ``FullGaussian2d`` per scan
  whose mu is predicted from the cortical (motor) coordinates, ELU + 1 output; its
  ``standard_trainer`` recipe: Poisson loss summed over the batch and scaled by
  sqrt(train trials / batch), plus the core and readout regularizers; Adam lr 0.005, batch 128;
  ``neuralpredictors.training.early_stopping`` on the validation correlation (interval 1,
  patience 5, tolerance 1e-6, 3 learning-rate decays by 0.3 with ReduceLROnPlateau, best state
  restored, at most 200 epochs). Inputs: the twin's standardized images, average-pooled by
  ``--baseline-downsample`` (default: the twin's own ``downsample``, so that both models see the
  same resolution, 18 x 32 for the cpu preset; 1 gives the baseline the full 36 x 64 canvas);
  responses divided by each neuron's training std (NeuroNormalizer), predictions scaled back for
  scoring.

    python benchmarks/peer.py            # full (CPU: tens of minutes)
    python benchmarks/peer.py --quick    # smoke run: 1 scan x 30 neurons x 256 trials, 1 epoch

On a CPU the baseline is the slow part: one forward + backward pass of a batch of 128 took
~60 s on the shared 2-core development machine (load ~13), so the full run needs a GPU
(``resolve_device`` picks CUDA when there is one; both models then run there).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from simulator import simulate_scans
from twin.data import ScanData
from twin.metrics import correlation, prediction_scores
from twin.presets import get_preset
from twin.training import build_model, fit, resolve_device
from v1twin.interop.neuralpredictors import load


def log(*a):
    print(*a, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scans", type=int, default=2)
    p.add_argument("--neurons", type=int, default=300, help="neurons per scan")
    p.add_argument("--trials", type=int, default=4000, help="train trials per scan")
    p.add_argument("--test-images", type=int, default=100)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--epochs", type=int, default=None, help="cap both models' epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--baseline-downsample",
        type=int,
        default=None,
        help="average-pool the baseline's input by this factor (default: the twin's downsample)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 1 scan x 30 neurons, 1 epoch")
    args = p.parse_args(argv)
    if args.quick:
        args.scans, args.neurons, args.trials, args.epochs = 1, 30, 256, 1
        args.test_images, args.repeats = 20, 5
    return args


def baseline_inputs(standardize, downsample: int):
    """The baseline's input function: raw images (B, 1, H, W) -> standardized images
    average-pooled by ``downsample`` (B, 1, H/d, W/d) float32 numpy."""

    def inputs(raw: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(standardize(raw))
        return (F.avg_pool2d(x, downsample) if downsample > 1 else x).numpy()

    return inputs


def baseline(scans: list[ScanData], coords: dict, seed: int, image_shape: tuple):
    """The Sensorium 2022 baseline (module docstring) as a neuralpredictors FiringRateEncoder for
    inputs of ``image_shape`` (H, W) pixels."""
    from neuralpredictors.layers.cores import Stacked2dCore
    from neuralpredictors.layers.encoders import FiringRateEncoder
    from neuralpredictors.layers.readouts import FullGaussian2d, MultiReadoutBase

    torch.manual_seed(seed)
    core = Stacked2dCore(
        input_channels=1,
        hidden_channels=64,
        input_kern=9,
        hidden_kern=7,
        layers=4,
        gamma_input=6.3831,
        skip=0,
        final_nonlinearity=True,
        bias=False,
        momentum=0.9,
        pad_input=False,
        batch_norm=True,
        hidden_dilation=1,
        laplace_padding=None,
        input_regularizer="LaplaceL2norm",
        stack=-1,
        depth_separable=True,
        use_avg_reg=False,
    )
    with torch.no_grad():
        shape = tuple(core(torch.zeros((1, 1, *image_shape))).shape[1:])

    class PerScanGaussians(MultiReadoutBase):  # sensorium's: a source grid per scan
        _base_readout = FullGaussian2d

        def prepare_readout_kwargs(self, i, data_key, first_data_key, source_grids, **kwargs):
            return dict(kwargs, source_grid=source_grids[data_key])

    train = {s.name: s.select("train").responses for s in scans}
    readout = PerScanGaussians(
        {s.name: shape for s in scans},
        {s.name: s.n_neurons for s in scans},
        mean_activity_dict={k: torch.tensor(r.mean(0) / r.std(0)) for k, r in train.items()},
        source_grids={k: c[:, :2] for k, c in coords.items()},
        bias=True,
        init_mu_range=0.3,
        init_sigma=0.1,
        gauss_type="full",
        feature_reg_weight=0.0076,
        grid_mean_predictor=dict(hidden_layers=1, hidden_features=30, final_tanh=True),
    )
    return FiringRateEncoder(core, readout, elu_offset=0.0)


def fit_baseline(model, scans, inputs, max_epochs: int | None, device) -> dict:
    """The standard_trainer recipe (module docstring) on ``inputs(raw images)`` (`baseline_inputs`).
    Returns {"epochs", "best_epoch" (epochs trained when the validation correlation peaked),
    "seconds", "val_corr", "std": {scan: (N,) response std}}."""
    from neuralpredictors.measures.modules import PoissonLoss
    from neuralpredictors.training import LongCycler, early_stopping

    # channels_last: the same arithmetic, but torch's CPU depthwise-convolution backward is ~13x
    # faster on it (one 7 x 7 depthwise layer, batch 128: 12 s -> 0.9 s on 2 threads)
    model.to(device, memory_format=torch.channels_last)
    data = {}
    for s in scans:
        tr, va = s.select("train"), s.select("validation")
        std = tr.responses.std(0)
        std = np.where(std > 0.01 * std.mean(), std, 0.01 * std.mean())
        data[s.name] = dict(
            train=torch.utils.data.TensorDataset(
                torch.tensor(inputs(tr.images)), torch.tensor(tr.responses / std)
            ),
            val=(torch.tensor(inputs(va.images)), va.responses / std),
            std=std,
        )
    loaders = {
        k: torch.utils.data.DataLoader(d["train"], batch_size=128, shuffle=True)
        for k, d in data.items()
    }
    n_train = sum(len(d["train"]) for d in data.values())
    criterion = PoissonLoss(avg=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.3, patience=5, threshold=1e-6, min_lr=1e-4,
        threshold_mode="abs",
    )  # fmt: skip

    @torch.no_grad()
    def val_corr(m):
        m.eval()
        out = []
        for k, d in data.items():
            x, y = d["val"]
            pred = torch.cat(
                [m(x[i : i + 256].to(device), data_key=k) for i in range(0, len(x), 256)]
            )
            out.append(correlation(pred.cpu().numpy(), y))
        m.train()
        score = float(np.mean(np.concatenate(out)))
        scores.append((score, trained))
        return score

    scores, trained = [], 0  # (validation correlation, epochs trained) at each evaluation

    epochs, start = 0, time.perf_counter()
    for epoch, score in early_stopping(
        model, val_corr, interval=1, patience=5, start=0, max_iter=max_epochs or 200,
        maximize=True, tolerance=1e-6, restore_best=True, scheduler=scheduler, lr_decay_steps=3,
    ):  # fmt: skip
        epochs = epoch
        log(f"  baseline: validation correlation {score:.3f} after {trained} epochs")
        model.train()
        for key, (x, y) in LongCycler(loaders):
            scale = np.sqrt(n_train / x.shape[0])
            out = model(x.to(device, memory_format=torch.channels_last), data_key=key)
            loss = scale * criterion(out, y.to(device)) + model.regularizer(data_key=key)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        trained += 1
    model.eval()
    return {
        "epochs": epochs,
        "best_epoch": max(scores, key=lambda sc: sc[0])[1],  # the first of equal scores
        "seconds": time.perf_counter() - start,
        "val_corr": val_corr(model),
        "std": {k: d["std"] for k, d in data.items()},
    }


@torch.no_grad()
def predict_baseline(model, x: np.ndarray, key: str, std: np.ndarray, device) -> np.ndarray:
    """Rates (B, N) of scan ``key``'s neurons for baseline inputs ``x`` (`baseline_inputs`), in
    response units (the NeuroNormalizer's ``std`` (N,) undone)."""
    xb = torch.tensor(x).to(device)
    pred = torch.cat([model(xb[i : i + 256], data_key=key) for i in range(0, len(xb), 256)])
    return pred.cpu().numpy() * std


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load()
    preset = get_preset("cpu")
    cfg = preset.train
    cfg.seed = args.seed
    if args.epochs is not None:
        cfg.max_epochs = args.epochs
    device = resolve_device(cfg.device)
    sims = simulate_scans(
        n_scans=args.scans,
        n_neurons=args.neurons,
        n_train=args.trials,
        n_validation=max(args.trials // 8, 1),
        n_test_images=args.test_images,
        n_repeats=args.repeats,
        seed=args.seed,
    )
    data = [ScanData(s.name, s.images, s.responses, s.tiers, s.image_ids) for s in sims]
    log(
        f"data: {args.scans} scan(s) x {args.neurons} neurons, {args.trials} train trials, "
        f"{args.test_images} test images x {args.repeats}; device {device}, "
        f"{torch.get_num_threads()} threads"
    )

    twin = build_model(preset, data, seed=args.seed)
    t0 = time.perf_counter()
    hist = fit(twin, data, cfg, progress=False)
    seconds = {"twin": time.perf_counter() - t0}
    epochs = {"twin": len(hist["epoch"])}
    log(f"twin: {epochs['twin']} epochs, best val corr {hist['best_val_corr']:.3f}")

    pool = preset.downsample if args.baseline_downsample is None else args.baseline_downsample
    inputs = baseline_inputs(twin.standardize, pool)
    shape = inputs(data[0].images[:1]).shape[2:]
    log(f"baseline input: {shape[0]} x {shape[1]} (pooled {pool}x)")
    base = baseline(data, {s.name: s.cell_motor_coordinates for s in sims}, args.seed, shape)
    t0 = time.perf_counter()
    bh = fit_baseline(base, data, inputs, args.epochs, device)
    seconds["Sensorium baseline"] = time.perf_counter() - t0
    epochs["Sensorium baseline"] = bh["epochs"]
    log(f"baseline: {bh['epochs']} epochs, val corr {bh['val_corr']:.3f}")

    per = {"twin": [], "Sensorium baseline": []}
    for d in data:
        test = d.select("test")
        per["twin"].append(
            prediction_scores(twin.predict(twin.standardize(test.images), d.name), test)
        )
        pb = predict_baseline(base, inputs(test.images), d.name, bh["std"][d.name], device)
        per["Sensorium baseline"].append(prediction_scores(pb, test))
    n_params = {
        "twin": sum(p.numel() for p in twin.parameters()),
        "Sensorium baseline": sum(p.numel() for p in base.parameters()),
    }
    log("\nmedians over all neurons of all scans (test tier; one metric implementation)")
    header = f"{'model':<20}{'test corr':>11}{'corr-to-avg':>13}{'FEVE':>8}{'epochs':>8}"
    header += f"{'fit s':>9}{'params':>10}"
    log(header)
    log("-" * len(header))
    for name, lst in per.items():
        med = {k: np.median(np.concatenate([s[k] for s in lst])) for k in lst[0]}
        log(
            f"{name:<20}{med['test_correlation']:>11.3f}{med['correlation_to_average']:>13.3f}{med['feve']:>8.3f}"
            f"{epochs[name]:>8}{seconds[name]:>9.1f}{n_params[name]:>10}"
        )
    log(f"fit time ratio baseline / twin: {seconds['Sensorium baseline'] / seconds['twin']:.2f}")


if __name__ == "__main__":
    main()
