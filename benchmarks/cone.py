"""Benchmark: one neuron's response to its own image, by the whole core or by its read point's cone.

The direct path of the in-silico experiments (size tuning, border neurons, MEIs, the stimulus
comparison) shows each neuron its own image and keeps only that neuron's response
(``TwinResponseModel.respond_own``). ``Twin.own_drive`` computes the core only in the cone of
the neuron's read point (``RotationEquivariantCore.forward_at``) instead of on the whole canvas.
Both are timed interleaved, in rounds, on the same images and neurons, after checking that they
give the same numbers; per preset and canvas it prints ms per image for each and their ratio.
Random weights: the cost does not depend on them.

    .venv/bin/python benchmarks/cone.py [--batch 256] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from twin.model import Twin
from twin.presets import get_preset

CANVASES = ((36, 64), (72, 128))


def build(preset: str, canvas: tuple[int, int], n_neurons: int) -> Twin:
    """A twin of ``preset``'s architecture on ``canvas``, eval mode, random read points."""
    p = get_preset(preset)
    twin = Twin(p.core, p.readout, {"s": n_neurons}, canvas, p.downsample, p.output)
    twin.readouts["s"].mu.data.uniform_(-1, 1)
    return twin.eval()


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


@torch.no_grad()
def compare(twin: Twin, batch: int, rounds: int) -> tuple[float, float, float]:
    """(ms per image whole core, ms per image cone, max abs difference of the drives)."""
    x = torch.randn(batch, 1, *twin.image_shape)
    idx = torch.randint(0, twin.readouts["s"].n_neurons, (batch,))
    readout = twin.readouts["s"]

    def whole():
        return readout.own(twin.features(x), idx)

    def cone():
        return twin.own_drive(x, "s", idx)

    diff = (whole() - cone()).abs().max().item()
    t_whole = t_cone = 0.0
    for _ in range(rounds):
        t_whole += timed(whole)
        t_cone += timed(cone)
    per = 1e3 / (rounds * batch)
    return t_whole * per, t_cone * per, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{args.batch} images x {args.rounds} rounds, {args.threads} thread(s)")
    print("| preset | canvas | whole core ms/image | cone ms/image | ratio | max abs diff |")
    print("|---|---|---:|---:|---:|---:|")
    for preset in ("cpu", "paper"):
        for canvas in CANVASES:
            whole, cone, diff = compare(build(preset, canvas, 100), args.batch, args.rounds)
            print(
                f"| {preset} | {canvas[0]} x {canvas[1]} | {whole:.3f} | {cone:.3f} "
                f"| {whole / cone:.1f} | {diff:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
