"""GPU figures of the pipeline's own functions, one part per call, merged into one JSON file.

    python benchmarks/gpu.py --part peak|train|align|insilico|mei|summary [--out gpu.json] [--tiny]

Parts (each appends its results to ``--out`` as it finishes, so a part killed by a time limit
leaves the earlier ones, and the alignment and MEI parts write partial results as they go):

* ``peak``: the measured matmul peak (bfloat16 and float16, 8192^3; TF32 and float32 too), the
  denominator of the training's FLOP fraction.
* ``train``: steps/s and images/s of ``twin.training._train_epoch`` (the training loop's own step,
  under ``twin.training.autocast``: bfloat16 on CUDA) for the ``paper`` preset at its canvas
  (36 x 64) with 8,000 neurons and its batch size; FLOPs per step counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on one forward + backward (core and whole model).
* ``align``: ``schemas.clustering.aligner`` with ``AlignmentParams.add``'s defaults (20 betas,
  the pipeline's fit) on 50,000 synthetic bar codes (N, F 16, O 8); time per beta as it goes and
  ``torch.cuda.max_memory_allocated``.
* ``insilico``: a ``paper``-preset twin with 8,000 neurons and random weights (RFs placed in the
  interior, so that every neuron takes the fast path; the direct path's cost is timed apart on a
  few border neurons): ``twin_adapter.optimal_gabor`` on ``GaborGrid.paper`` with the pipeline's
  re-scoring, then the battery's four experiments as ``schemas.insilico`` runs them.
* ``mei``: ``schemas.insilico.scan_meis`` (chunks of ``MEI_CHUNK`` neurons, the pipeline's default
  100 steps and norm) for the same twin; stops after ``--mei-seconds`` and extrapolates from the
  chunks done (said in the output).
* ``summary``: prints the table of everything in ``--out``.

``--tiny``: small sizes on any device, to run every line on a CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

SIZES = {  # full, tiny
    "neurons": (8000, 12),
    "train_images": (64 * 40, 16),
    "align_n": (50000, 60),
    "align_betas": (20, 2),
    "border_neurons": (4, 2),
    "peak_n": (8192, 256),
}


def size(name: str, tiny: bool) -> int:
    return SIZES[name][1 if tiny else 0]


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int = 1):
    """(result of the last call, seconds per call), synchronised."""
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    sync()
    return out, (time.perf_counter() - start) / repeats


def record(path: Path, part: str, values: dict) -> None:
    """Merge ``values`` into ``path``'s ``part`` entry (read, update, write)."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    data.setdefault("date", datetime.date.today().isoformat())
    data.setdefault("torch", torch.__version__)
    data.setdefault(part, {}).update(values)
    path.write_text(json.dumps(data, indent=1, default=float))
    print(f"[{part}] " + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items()), flush=True)


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def reset_peak():
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


# ---- peak -----------------------------------------------------------------------------------
def part_peak(out: Path, tiny: bool) -> None:
    n = size("peak_n", tiny)
    dev = device()
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if dev.type == "cpu":
        dtypes = {"float32": torch.float32}
    for name, dtype in dtypes.items():
        a = torch.randn(n, n, device=dev, dtype=dtype)
        b = torch.randn(n, n, device=dev, dtype=dtype)
        timed(lambda a=a, b=b: a @ b, 3)  # warm-up
        _, sec = timed(lambda a=a, b=b: a @ b, 10 if not tiny else 2)
        record(out, "peak", {f"matmul_{name}_tflops": 2 * n**3 / sec / 1e12})
    if dev.type == "cuda":
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        a = torch.randn(n, n, device=dev)
        timed(lambda: a @ a, 3)
        _, sec = timed(lambda: a @ a, 10)
        torch.backends.cuda.matmul.allow_tf32 = before
        record(out, "peak", {"matmul_tf32_tflops": 2 * n**3 / sec / 1e12})
    record(out, "peak", {"matmul_n": n, "cudnn_conv_allow_tf32": torch.backends.cudnn.allow_tf32})


# ---- twin -----------------------------------------------------------------------------------
def synthetic_scan(name: str, n_neurons: int, n_train: int, canvas, seed: int = 0):
    """A ScanData of white-noise images (0-255) and Poisson responses: timing only."""
    from twin.data import ScanData

    rng = np.random.default_rng(seed)
    n_val = 64
    t = n_train + n_val
    h, w = canvas
    return ScanData(
        name,
        rng.uniform(0, 255, (t, 1, h, w)).astype(np.float32),
        rng.poisson(1.0, (t, n_neurons)).astype(np.float32),
        np.array(["train"] * n_train + ["validation"] * n_val),
        np.arange(t),
    )


def paper_twin(n_neurons: int, tiny: bool, n_train: int = 64):
    """A paper-preset twin (random weights; tiny: the cpu preset) for one synthetic scan "s", on
    the device."""
    from twin.presets import get_preset
    from twin.training import build_model

    preset = get_preset("cpu" if tiny else "paper")
    scan = synthetic_scan("s", n_neurons, n_train, preset.canvas)
    return build_model(preset, [scan], seed=0).to(device()), scan, preset


def part_train(out: Path, tiny: bool) -> None:
    from torch.utils.flop_counter import FlopCounterMode
    from tqdm.auto import tqdm

    from twin.training import _batches, _tier_tensors, _train_epoch, autocast, poisson_loss

    n = size("neurons", tiny)
    model, scan, preset = paper_twin(n, tiny, size("train_images", tiny))
    config = replace(preset.train, batch_size=8) if tiny else preset.train
    dev = device()
    train = {"s": _tier_tensors(model, scan, "train", dev)}
    gen = torch.Generator().manual_seed(0)
    batches = {"s": _batches(len(train["s"][0]), config.batch_size, gen)}
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    mixed = autocast(dev)
    bar = tqdm(disable=True)
    record(
        out,
        "train",
        {
            "neurons": n,
            "batch_size": config.batch_size,
            "canvas": "x".join(map(str, preset.canvas)),
            "autocast": "bfloat16" if dev.type == "cuda" else "none (float32)",
        },
    )
    x = train["s"][0][: config.batch_size]
    y = train["s"][1][: config.batch_size]
    model.train()
    with FlopCounterMode(display=False) as total:
        with mixed:
            rates = model(x, "s")
        poisson_loss(rates.float(), y).backward()
    with FlopCounterMode(display=False) as core:
        with mixed:
            feats = model.features(x)
        feats.float().sum().backward()
    opt.zero_grad(set_to_none=True)
    flops = total.get_total_flops()
    record(
        out,
        "train",
        {
            "gflop_per_step": flops / 1e9,
            "core_gflop_per_step": core.get_total_flops() / 1e9,
            "core_gflop_per_image_fwd_bwd": core.get_total_flops() / config.batch_size / 1e9,
        },
    )
    steps = 3 if tiny else 20

    def run(k):
        return _train_epoch(model, train, batches, opt, None, config, k, mixed, bar)

    timed(lambda: run(5 if not tiny else 1))  # warm-up (cuDNN autotuning, allocator)
    reset_peak()
    _, sec = timed(lambda: run(steps))
    sec_step = sec / steps
    values = {
        "seconds_per_step": sec_step,
        "images_per_s": config.batch_size / sec_step,
        "achieved_tflops": flops / sec_step / 1e12,
        "peak_mem_gib": peak_gib(),
    }
    peaks = json.loads(out.read_text()).get("peak", {})
    ref = peaks.get("matmul_bfloat16_tflops") or peaks.get("matmul_float32_tflops")
    if ref:
        values["fraction_of_measured_peak"] = values["achieved_tflops"] / ref
    record(out, "train", values)


# ---- alignment ------------------------------------------------------------------------------
def part_align(out: Path, tiny: bool) -> None:
    import tqdm as tqdm_module

    from clustering import alignment
    from schemas.clustering import aligner

    sys_path_benchmarks()
    from align import synthetic_barcodes

    n, betas = size("align_n", tiny), size("align_betas", tiny)
    codes = synthetic_barcodes(n, 16, 8)
    params = {"n_betas": betas, "min_temperature": 5.0, "metric": "euclidean", "random_state": 0}
    if tiny:
        params["max_iter"] = 30
        params["refine_iter"] = 10
    record(out, "align", {"n": n, "F": 16, "O": 8, "n_betas": betas, "params": json.dumps(params)})
    start = time.perf_counter()

    class Timed(tqdm_module.tqdm):
        """The beta sweep's progress bar, writing each finished beta's time and memory."""

        def __iter__(self):
            for i, item in enumerate(super().__iter__()):
                yield item
                sync()
                record(
                    out,
                    "align",
                    {
                        "betas_done": i + 1,
                        "seconds_so_far": time.perf_counter() - start,
                        "peak_mem_gib": peak_gib(),
                    },
                )

    alignment.tqdm = Timed
    reset_peak()
    fitted = aligner(params)
    fitted.progress = True
    _, sec = timed(lambda: fitted.fit(codes))
    record(
        out,
        "align",
        {
            "seconds": sec,
            "seconds_per_beta": sec / betas,
            "peak_mem_gib": peak_gib(),
            "n_iter_total": int(fitted.losses_["n_iter"].sum()),
            "beta_chosen": fitted.beta_,
        },
    )


def sys_path_benchmarks():
    import sys

    here = str(Path(__file__).parent)
    if here not in sys.path:
        sys.path.insert(0, here)


# ---- in silico --------------------------------------------------------------------------------
def interior_model(n: int, tiny: bool):
    """TwinResponseModel of a paper twin with n neurons whose RFs lie uniformly in the interior
    (outside the border margin of the fast path)."""
    from insilico.twin_adapter import TwinResponseModel

    twin, _, _ = paper_twin(n, tiny)
    twin.eval()
    rm = TwinResponseModel(twin, "s")
    h, w = twin.image_shape
    margin = twin.hidden_reach + 1
    rng = np.random.default_rng(0)
    pos = np.stack([rng.uniform(margin, w - 1 - margin, n), rng.uniform(margin, h - 1 - margin, n)])
    r = twin.readouts["s"]
    with torch.no_grad():
        unit = 2 * pos.T / np.array([w - 1, h - 1]) - 1
        r.mu.copy_(torch.tensor(unit, dtype=torch.float32))
    assert not rm.border_mask().any()
    return rm


def part_insilico(out: Path, tiny: bool) -> None:
    from insilico import experiments, search, twin_adapter
    from insilico.model import pixels_per_degree

    n = size("neurons", tiny)
    rm = interior_model(n, tiny)
    ppd = pixels_per_degree(rm)
    grid = search.GaborGrid.cpu(ppd) if tiny else search.GaborGrid.paper(ppd)
    record(
        out,
        "insilico",
        {"neurons": n, "grid_stimuli": len(grid), "grid": "cpu" if tiny else "paper"},
    )
    with torch.no_grad():
        small = rm.subset(np.arange(min(n, 64)))
        twin_adapter.optimal_gabor(small, search.GaborGrid.cpu(ppd))  # warm-up
        reset_peak()
        best, sec = timed(lambda: twin_adapter.optimal_gabor(rm, grid, refine=twin_adapter.REFINE))
        record(out, "insilico", {"optimal_gabor_s": sec, "optimal_gabor_mem_gib": peak_gib()})
        params = search.params_of(best, search.GABOR_KEYS)
        stages = {
            "orientation_s": lambda: twin_adapter.per_neuron_experiment(
                experiments.orientation_tuning, rm, params, 16
            ),
            "phase_s": lambda: twin_adapter.per_neuron_experiment(
                experiments.phase_tuning, rm, params, 16
            ),
            "size_contrast_s": lambda: twin_adapter.size_contrast_tuning(rm, params),
            "plaid_s": lambda: twin_adapter.per_neuron_experiment(
                experiments.plaid_tuning, rm, params
            ),
        }
        for name, fn in stages.items():
            _, sec = timed(fn)
            record(out, "insilico", {name: sec})
        k = size("border_neurons", tiny)
        sub = rm.subset(np.arange(k))
        _, sec = timed(lambda: search.optimal_gabor(sub, grid, chunk_size=2048))
        record(out, "insilico", {"direct_search_s_per_border_neuron": sec / k})


def part_mei(out: Path, tiny: bool, seconds: float) -> None:
    from insilico import mei as mei_module
    from schemas import insilico as schemas_insilico

    n = size("neurons", tiny)
    rm = interior_model(n, tiny)
    steps = 5 if tiny else 100
    chunk = 16 if tiny else schemas_insilico.MEI_CHUNK
    norm = mei_module.NORM_DEG * rm.pixels_per_degree
    schemas_insilico.scan_meis(rm.subset(np.arange(min(n, chunk))), norm, 2, chunk)  # warm-up
    record(out, "mei", {"neurons": n, "steps": steps, "chunk": chunk})
    reset_peak()
    done, start = 0, time.perf_counter()
    while done < n and time.perf_counter() - start < seconds:
        part = rm.subset(np.arange(done, min(done + chunk, n)))
        timed(lambda part=part: schemas_insilico.scan_meis(part, norm, steps, chunk))
        done += len(part.rf_positions)
        elapsed = time.perf_counter() - start
        record(
            out,
            "mei",
            {
                "neurons_done": done,
                "seconds_so_far": elapsed,
                "seconds_per_chunk": elapsed / math.ceil(done / chunk),
                "estimated_total_s": elapsed * n / done,
                "extrapolated": done < n,
                "peak_mem_gib": peak_gib(),
            },
        )


# ---- summary ----------------------------------------------------------------------------------
def part_summary(out: Path) -> None:
    data = json.loads(out.read_text()) if out.exists() else {}
    print(f"GPU: {data.get('gpu')}  date: {data.get('date')}  torch: {data.get('torch')}")
    for part in ("peak", "train", "align", "insilico", "mei"):
        for k, v in data.get(part, {}).items():
            print(f"  {part:9s} {k:34s} {_fmt(v)}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", required=True)
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu.json"))
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--mei-seconds", type=float, default=60.0)
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.tiny:
        torch.set_num_threads(1)
    if a.part == "summary":
        return part_summary(out)
    if a.part == "mei":
        return part_mei(out, a.tiny, a.mei_seconds)
    parts = {"peak": part_peak, "train": part_train, "align": part_align}
    parts["insilico"] = part_insilico
    parts[a.part](out, a.tiny)


if __name__ == "__main__":
    main()
