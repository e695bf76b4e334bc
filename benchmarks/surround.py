"""Benchmark: does a twin learn the virtual V1's surround suppression? (prints a table; not a test)

Trains one twin per architecture on the same simulated scans, then measures each against the
simulator's ground truth with the simulator's own preferred Gabor of every interior neuron
(true RF position, orientation, spatial frequency; phase 0), all by the direct path:

* size tuning at one contrast (sizes 2..32 px, DT Eq. 12; by default the battery's top contrast,
  4, at which DT Eq. 12 is taken): the suppression index of the twin and of the simulator, their
  Spearman correlation, the mean index of surround cells (type ``simple_surround``) and of the
  others, per type the means and the Spearman within the type, and the AUC of the twin's index
  for surround cells against the others;
* the Spearman of two ideal twins (``ideal_twins``): how much of the Spearman rests on ranking
  the weak indices of the non-surround cells, and how much the simulator's ties at 0 cap it;
* a ring probe: response to the Gabor plus a ring of the same grating (1.2-2.5 x size from the
  RF) over the Gabor alone, median over surround cells (< 1: suppression);
* the in-silico battery (`insilico.experiments.run_battery`, direct path) of the interior neurons,
  each model at its own optimal Gabor from a centred grid: the Spearman of the orientation, phase,
  suppression and plaid indices, twin vs simulator (the insilico benchmark's measure, without
  its fast path, so it also runs for twins whose readout pool leaves no neuron interior);
* on held-out natural images, the twin's correlation with each surround cell and with the same
  cell without surround modulation (``VirtualV1.forward(x, surround=False)``): a twin that models
  the surround tracks the neuron better than the neuron without it.

Architectures: the "cpu" preset, and the same preset with each ``--variant`` JSON merged in
(keys ``core``, ``readout`` are merged, others replaced). The default variants: the preset with
surround pooling (``twin.core``), and an older "cpu" preset (two layers, reach 12 px, ELU + 1,
zero padding), which learns no suppression.
Saves the size-tuning curves of four surround cells as ``surround.png``.

    python benchmarks/surround.py                 # 2 x 250 neurons, 4000 trials, 12 epochs
    python benchmarks/surround.py --noiseless     # train on the noiseless rates
    python benchmarks/surround.py --epochs 40 --init-seeds 0 1 2 \\
        --variant '{"readout": {"type": "gaussian_dn"}}'
        # three twins per architecture on the same data (initialisation and batch order seeded
        # 0, 1, 2): how far the seed alone moves each measure, and what their ensemble scores
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from common import architecture, ideal_twins, suppression_by_type, surround_probe, train

from insilico.indices import suppression_index
from insilico.stimuli import gabor
from insilico.twin_adapter import TwinResponseModel
from simulator.recovery import SimSubset, battery, centred_grid, index_spearman

SIZES = (2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)
DEFAULT_VARIANTS = (
    '{"core": {"surround_sigmas": [3.0, 6.0]}}',
    '{"core": {"features": [4, 4], "kernel_sizes": [9, 5], "dilations": [1, 1], '
    '"padding": "zero", "surround_sigmas": []}, "output": "elu1"}',
)


def log(*a):
    print(*a, flush=True)


@torch.no_grad()
def size_tuning(respond, sim, neurons, contrast: float) -> np.ndarray:
    """(len(neurons), len(SIZES)) responses to each neuron's true preferred Gabor."""
    out = []
    for k in neurons:
        (x, y), th, sf = (
            sim.rf_positions[k],
            sim.preferred_orientations[k],
            sim.spatial_frequencies[k],
        )
        stimuli = torch.cat([gabor(x, y, s, sf, contrast, th, 0.0) for s in SIZES])
        out.append(respond(stimuli)[:, k].numpy())
    return np.array(out)


class MeanRate:
    """The mean rate of several ResponseModels of the same neurons (an ensemble of twins); its RF
    positions are the members' mean."""

    def __init__(self, members):
        self.members = list(members)
        self.rf_positions = np.mean([m.rf_positions for m in self.members], axis=0)
        self.preferred_orientations = None

    def parameters(self):
        return self.members[0].parameters()

    def __call__(self, images):
        return torch.stack([m(images) for m in self.members]).mean(0)


def battery_spearman(twin_idx, sim_idx) -> str:
    """'o / p / s / x': Spearman twin vs simulator of the four indices (NaNs dropped)."""
    return " / ".join(f"{rho:.2f}" for rho, _ in index_spearman(twin_idx, sim_idx).values())


def suppression(curves: np.ndarray) -> np.ndarray:
    """DT Eq. 12 of size-tuning curves (neuron, size) at one contrast."""
    return suppression_index(curves[:, None, :])


def main():
    from scipy.stats import spearmanr

    from simulator import simulate_scans

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--neurons", type=int, default=250, help="per scan")
    ap.add_argument("--scans", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument(
        "--contrast", type=float, default=4.0, help="of the size-tuning Gabors (standardized)"
    )
    ap.add_argument("--noiseless", action="store_true", help="train on the noiseless rates")
    ap.add_argument(
        "--variant", action="append", help="JSON merged into the cpu preset (repeatable)"
    )
    ap.add_argument(
        "--seed", type=int, default=0, help="of the simulated data (and the twin's init)"
    )
    ap.add_argument(
        "--init-seeds",
        type=int,
        nargs="+",
        help="train one twin per seed (initialisation "
        "and batch order) on the same data, and their ensemble",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("surround.png"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    sims = simulate_scans(
        n_scans=args.scans,
        n_neurons=args.neurons,
        n_train=args.n_train,
        n_validation=args.n_train // 5,
        n_test_images=10,
        n_repeats=2,
        seed=args.seed,
    )
    sc, sim = sims[0], sims[0].model
    x, y = sim.rf_positions.T
    interior = np.flatnonzero((x > 18) & (x < 45) & (y > 12) & (y < 23))
    is_sur = sim.types[interior] == "simple_surround"
    truth = size_tuning(sim, sim, interior, args.contrast)
    si_sim = suppression(truth)
    rows = [
        (
            f"simulator: suppression index, surround cells / others (n={len(interior)})",
            f"{si_sim[is_sur].mean():.3f} / {si_sim[~is_sur].mean():.3f}",
        )
    ]
    rows += ideal_twins(si_sim, sim.types[interior])
    curves = {"simulator": truth}
    sim_battery = battery(SimSubset(sim, interior), centred_grid())
    for v, spec in enumerate(["{}"] + list(args.variant or DEFAULT_VARIANTS)):
        arch = architecture(json.loads(spec))
        base = "cpu preset" if spec == "{}" else f"variant {v}"
        if spec != "{}":
            log(f"{base} = {spec}")
        members, owns = [], []
        for init in args.init_seeds or [args.seed]:
            twin, val, secs = train(arch, sims, args.epochs, args.seed, args.noiseless, init)
            label = base if not args.init_seeds else f"{base}, init seed {init}"
            log(f"{label}: trained in {secs:.0f} s, validation corr {val:.3f}")
            respond = lambda images, twin=twin: twin(images, sc.name)  # noqa: E731
            tuned = size_tuning(respond, sim, interior, args.contrast)
            si = suppression(tuned)
            rho = spearmanr(si, si_sim).correlation
            rows += [
                (f"[{label}] validation correlation", f"{val:.3f}"),
                (
                    f"[{label}] suppression index, surround cells / others",
                    f"{si[is_sur].mean():.3f} / {si[~is_sur].mean():.3f}",
                ),
                (f"[{label}] Spearman suppression index, twin vs simulator", f"{rho:.3f}"),
            ]
            rows += suppression_by_type(si, si_sim, sim.types[interior], label)
            members.append(TwinResponseModel(twin, sc.name).subset(interior))
            owns.append(battery(members[-1], centred_grid()))
            rows.append(
                (
                    f"[{label}] battery at own optimal Gabor, Spearman orientation / phase / "
                    "suppression / plaid",
                    battery_spearman(owns[-1], sim_battery),
                )
            )
            rows += [(f"[{label}] {n}", v) for n, v in surround_probe(respond, sc, interior)]
            curves[label] = tuned
        if len(members) > 1:
            rows += [
                (
                    f"[{base}] {len(members)} seeds: battery of the mean rate (ensemble), Spearman "
                    "o / p / s / x",
                    battery_spearman(battery(MeanRate(members), centred_grid()), sim_battery),
                ),
                (
                    f"[{base}] {len(members)} seeds: mean of the members' indices, Spearman o / p "
                    f"/ s / x",
                    battery_spearman(
                        sum(o.reset_index(drop=True) for o in owns) / len(owns), sim_battery
                    ),
                ),
            ]
    w = max(len(r[0]) for r in rows)
    print("\n" + "=" * (w + 16))
    for name, val in rows:
        print(f"{name:<{w}}  {val:>14}")
    print("=" * (w + 16))
    plot(curves, interior[is_sur][:4], interior, args)


def plot(curves: dict, cells, interior, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cells), figsize=(3.2 * len(cells), 3), squeeze=False)
    pos = {k: i for i, k in enumerate(interior)}
    for ax, k in zip(axes[0], cells):
        for label, c in curves.items():
            r = c[pos[k]]
            ax.plot(SIZES, r / r.max(), marker="o", label=label)
        ax.set(xscale="log", xlabel="Gabor size (px)", title=f"surround cell {k}")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(SIZES[::2] + SIZES[-1:], [f"{s:g}" for s in SIZES[::2] + SIZES[-1:]])
    axes[0, 0].set_ylabel("response / max")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(f"Size tuning at contrast {args.contrast}: simulator vs twins")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    log(f"saved {args.out}")


if __name__ == "__main__":
    main()
