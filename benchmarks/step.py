"""Benchmark: one training step of the `cpu` twin, before and after the step's speed-ups.

A step is what `twin.training.fit` does per minibatch: a forward pass of one batch from every
scan, the Poisson loss plus the readout penalty, backward and an Adam update. "before" is the
same model with the readout drive computed as ``einsum("bcn,nc->bn")`` (the code before
issue 22's profiling: N tiny batched matmuls); "after" is the library's. Both models start
from the same weights and are checked to give the same rates; their steps are then timed
interleaved, in rounds, in one process, so that the machine's load hits both alike. "after,
bfloat16" is "after" under the training's bfloat16 autocast (`twin.training.autocast`, the
"auto" precision on CPUs with AMX or AVX-512 BF16). Two variants of "after" that were tried and
rejected (slower on CPU) are timed alongside: channels-last hidden convolutions and
Hermite-factorised hidden convolutions.

    python benchmarks/step.py                  # 2 scans x 300 neurons, batch 32, 1 thread
    python benchmarks/step.py --profile        # and the top operators of an "after" step
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from simulator import simulate_scans
from twin.core import HermiteRotConv2d
from twin.data import ScanData
from twin.readouts import GaussianReadout
from twin.training import autocast, build_model, native_bfloat16, poisson_loss


class EinsumReadout(GaussianReadout):
    """The Gaussian readout as it was: the drive as one einsum over (B, C, N) x (N, C)."""

    def forward(self, core_out: torch.Tensor) -> torch.Tensor:
        mu = self.mu.clamp(-1, 1)[None].expand(core_out.shape[0], -1, -1)
        if self.training:
            mu = (mu + self.sigma * torch.randn_like(mu)).clamp(-1, 1)
        sampled = self._read(core_out, mu.to(core_out.dtype))
        return torch.einsum("bcn,nc->bn", sampled, self.features.to(sampled.dtype)) + self.bias


class ChannelsLastConv(HermiteRotConv2d):
    """Tried and rejected: hidden layers convolve channels-last tensors (oneDNN's NHWC path)."""

    def forward(self, x):
        if x.shape[1] == 1:
            return super().forward(x)
        cl = torch.channels_last
        pad = self.dilation * (self.kernel_size // 2)
        w = self.filters().contiguous(memory_format=cl)
        y = F.conv2d(x.contiguous(memory_format=cl), w, padding=pad, dilation=self.dilation)
        return y.contiguous()


class FactorisedConv(HermiteRotConv2d):
    """Tried and rejected: hidden layers convolve every input channel with the K Hermite basis
    functions (a depthwise convolution), then mix the C_in * K maps with the rotated
    coefficients (a 1 x 1 convolution): 2.3x fewer multiply-adds for 5 x 5 kernels, K = 6."""

    def forward(self, x):
        if x.shape[1] == 1:
            return super().forward(x)
        c_in, k = x.shape[1], self.basis.shape[0]
        pad = self.dilation * (self.kernel_size // 2)
        basis = self.basis[:, None].repeat(c_in, 1, 1, 1)  # (C_in * K, 1, S, S)
        maps = F.conv2d(x, basis, padding=pad, dilation=self.dilation, groups=c_in)
        mix = self.rotated_coefficients().reshape(-1, c_in * k, 1, 1)
        return F.conv2d(maps, mix)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scans", type=int, default=2)
    p.add_argument("--neurons", type=int, default=300, help="neurons per scan")
    p.add_argument("--batch", type=int, default=32, help="trials per scan per step")
    p.add_argument("--rounds", type=int, default=8, help="interleaved rounds")
    p.add_argument("--steps", type=int, default=5, help="timed steps per model per round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--tried",
        nargs="*",
        default=["channels-last", "factorised"],
        choices=["channels-last", "factorised"],
        help="rejected variants of 'after' to time alongside (default both)",
    )
    p.add_argument("--profile", action="store_true", help="print the top operators of a step")
    return p.parse_args(argv)


def make_step(model, batches, precision="float32"):
    """A closure running one training step of `model` on the fixed `batches` {scan: (x, y)},
    its forward pass under the training's autocast for `precision`."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    cpu = torch.device("cpu")

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = 0.0
        for name, (x, y) in batches.items():
            with autocast(cpu, precision):
                rates = model(x, name)
            loss = loss + poisson_loss(rates.float(), y) + model.readouts[name].regularizer()
        loss.backward()
        optimizer.step()

    return step


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    sims = simulate_scans(
        n_scans=args.scans,
        n_neurons=args.neurons,
        n_train=4 * args.batch,
        n_validation=args.batch,
        n_test_images=2,
        n_repeats=2,
        seed=0,
    )
    data = [ScanData(s.name, s.images, s.responses, s.tiers, s.image_ids) for s in sims]
    after = build_model("cpu", data, seed=0)
    before = copy.deepcopy(after)
    for readout in before.readouts.values():
        readout.__class__ = EinsumReadout
    models = {"before": before, "after": after}
    for name, cls in (("channels-last", ChannelsLastConv), ("factorised", FactorisedConv)):
        if name in args.tried:
            models[name] = copy.deepcopy(after)
            for conv in models[name].core.convs:
                conv.__class__ = cls
    batches = {
        d.name: (
            torch.from_numpy(after.standardize(d.images[: args.batch])),
            torch.from_numpy(d.responses[: args.batch]),
        )
        for d in data
    }
    for key, model in models.items():
        for name, (x, _) in batches.items():
            same = np.allclose(model.predict(x, name), after.predict(x, name), rtol=1e-4, atol=1e-6)
            if not same:
                raise AssertionError(f"{key} and after predict different rates for scan {name}")
    steps = {key: make_step(model, batches) for key, model in models.items()}
    if native_bfloat16(torch.device("cpu")):
        steps["after, bfloat16"] = make_step(copy.deepcopy(after), batches, "bfloat16")
    else:
        print("this CPU has no native bfloat16 (AMX / AVX-512 BF16): 'after, bfloat16' not timed")
    seconds = {key: [] for key in steps}
    for key in steps:  # warm-up
        steps[key]()
    for _ in range(args.rounds):
        for key, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            seconds[key].append((time.perf_counter() - start) / args.steps)
    med = {key: float(np.median(s)) for key, s in seconds.items()}
    print(
        f"cpu twin, {args.scans} scans x {args.neurons} neurons, batch {args.batch} per scan, "
        f"{torch.get_num_threads()} thread(s); median of {args.rounds} interleaved rounds of "
        f"{args.steps} steps (same rates checked before timing)"
    )
    print(f"{'':17}{'s / step':>10}{'before / this':>15}")
    for key, value in med.items():
        print(f"{key:17}{value:>10.4f}{med['before'] / value:>14.2f}x")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                steps["after"]()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
