#!/usr/bin/env python
"""Benchmark multi-scale deformable attention implementations on pixel-decoder shapes.

For each image size and batch: value levels at 1/8, 1/16 and 1/32 of the image, 256 channels in 8 heads, 4 points,
and one query per value position (as in the pixel decoder's encoder), with sampling points scattered a few pixels
around each query's own position. Prints the median time of forward and forward+backward per implementation, the
speed-up over the PyTorch reference, and the max abs difference from the reference (output and gradients).

    python tools/benchmark_ms_deform_attn.py --device cpu --threads 2
    python tools/benchmark_ms_deform_attn.py --device cuda      # also every CUDA dtype
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from oneformer.ops import extension_status, ms_deform_attn  # noqa: E402


def make_inputs(image_size, batch, device, dtype, channels=256, heads=8, points=4, seed=0):
    """Pixel-decoder-like inputs: returns (value, spatial_shapes, level_start_index, sampling_locations, weights)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(image_size // s, image_size // s) for s in (8, 16, 32)]
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    level_start_index = torch.cat([spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]])
    S = int(spatial_shapes.prod(1).sum())
    L = len(shapes)
    # reference point of every query = the centre of its own pixel, shared by all levels
    refs = []
    for h, w in shapes:
        ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
        refs.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
    ref = torch.cat(refs)[None, :, None, None, None, :]  # (1, S, 1, 1, 1, 2)
    norm = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32)[None, None, None, :, None, :]
    offsets = torch.randn(batch, S, heads, L, points, 2, generator=g) * 3.0  # a few pixels of each level
    loc = ref + offsets / norm
    weights = torch.randn(batch, S, heads, L * points, generator=g).softmax(-1).view(batch, S, heads, L, points)
    value = torch.randn(batch, S, heads, channels // heads, generator=g)
    loc_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    return (value.to(device, dtype), spatial_shapes.to(device), level_start_index.to(device),
            loc.to(device, loc_dtype), weights.to(device, loc_dtype))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_impl(impl, inputs, runs, backward):
    """Median seconds per call of forward (and backward when asked) over ``runs`` samples after warm-up.

    On a GPU each sample times 10 back-to-back calls between two synchronizations, as a model issues them, so a
    call's time is what it adds to a forward pass, not a launch-and-wait round trip.
    """
    value, shapes, starts, loc, w = inputs
    device = value.device
    inner = 10 if device.type == "cuda" else 1
    if backward:
        value, loc, w = (t.detach().requires_grad_() for t in (value, loc, w))
    grad = None
    times = []
    for i in range(runs + 2):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            out = ms_deform_attn(value, shapes, starts, loc, w, impl=impl)
            if backward:
                if grad is None:
                    grad = torch.ones_like(out)
                out.backward(grad)
        _sync(device)
        if i >= 2:
            times.append((time.perf_counter() - t0) / inner)
        if backward:
            value.grad = loc.grad = w.grad = None
    return statistics.median(times)


def _on_cell_boundary(inputs, eps=1e-3):
    """(N, Lq, M, L, P, 2) bool: the point lies within ``eps`` pixels of a bilinear cell boundary on its level.

    Bilinear interpolation is not differentiable across cell boundaries, so there the location gradient of two
    correct implementations can differ by a jump when their float32 rounding puts the point in different cells.
    """
    _, shapes, _, loc, _ = inputs
    wh = torch.stack([shapes[:, 1], shapes[:, 0]], -1).to(loc)[None, None, None, :, None, :]
    pix = loc.double() * wh.double() - 0.5
    frac = pix - pix.floor()
    near = (frac < eps) | (frac > 1 - eps)
    return near.any(-1, keepdim=True).expand_as(loc)


def max_diffs(impl, inputs):
    """Compare ``impl`` with the reference on the same inputs.

    Returns (max abs output diff, max abs grad-value diff, max abs grad-location diff off cell boundaries,
    number of location-gradient entries on cell boundaries, max abs grad-weight diff).
    """
    res = {}
    for name in (impl, "pytorch"):
        value, shapes, starts, loc, w = (t.detach() for t in inputs)
        value, loc, w = (t.clone().requires_grad_() for t in (value, loc, w))
        out = ms_deform_attn(value, shapes, starts, loc, w, impl=name)
        grad = torch.linspace(-1, 1, out.numel(), device=out.device, dtype=torch.float32).view_as(out).to(out.dtype)
        out.backward(grad)
        res[name] = [out.float(), value.grad.float(), loc.grad.float(), w.grad.float()]
    d = [(a - b).abs() for a, b in zip(res[impl], res["pytorch"])]
    boundary = _on_cell_boundary(inputs)
    return (d[0].max().item(), d[1].max().item(), d[2][~boundary].max().item(), int(boundary.sum()),
            d[3].max().item())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dtypes", nargs="+", default=None,
                        help="float32 float64 float16 bfloat16 (default: float32 on CPU, all four on CUDA)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no GPU is visible")
    dtypes = args.dtypes or (["float32"] if device.type == "cpu" else ["float32", "float64", "float16", "bfloat16"])
    kernel = "cpp" if device.type == "cpu" else "cuda"
    status = extension_status()
    have_kernel = status["built"] and (device.type == "cpu" or status["cuda"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# ms_deform_attn benchmark on {name}; torch {torch.__version__}; extension {status}")
    print(f"# median of {args.runs} runs; speed-up = reference time / kernel time; "
          "diff = max |kernel - reference| of the output (fwd) and of the gradients of value, locations (excluding "
          "the n entries within 1e-3 px of a bilinear cell boundary, where the gradient jumps) and weights (fwd+bwd)")
    print(f"{'image':>6} {'batch':>5} {'dtype':>9} {'pass':>8} {'reference ms':>13} {kernel + ' ms':>10} "
          f"{'speed-up':>9}  diff")
    for size in args.sizes:
        for batch in args.batches:
            for dtype_name in dtypes:
                dtype = getattr(torch, dtype_name)
                inputs = make_inputs(size, batch, device, dtype)
                diffs = max_diffs(kernel, inputs) if have_kernel else None
                for backward in (False, True):
                    ref = time_impl("pytorch", inputs, args.runs, backward)
                    ker = time_impl(kernel, inputs, args.runs, backward) if have_kernel else float("nan")
                    if diffs is None:
                        diff_txt = ""
                    elif not backward:
                        diff_txt = "%.1e" % diffs[0]
                    else:
                        diff_txt = "value %.1e, loc %.1e (n=%d), weights %.1e" % diffs[1:]
                    print(f"{size:>6} {batch:>5} {dtype_name:>9} {'fwd+bwd' if backward else 'fwd':>8} "
                          f"{ref * 1e3:>13.2f} {ker * 1e3:>10.2f} {ref / ker:>8.1f}x  {diff_txt}", flush=True)


if __name__ == "__main__":
    main()
