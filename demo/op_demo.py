#!/usr/bin/env python
"""Smoke run of multi-scale deformable attention on random pixel-decoder-sized data (512x512 image).

Prints which implementation ran on each available device, the output shape, the time, and the difference from the
PyTorch reference.
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from oneformer.ops import extension_status, ms_deform_attn, resolve_impl  # noqa: E402
from tools.benchmark_ms_deform_attn import make_inputs  # noqa: E402


def main():
    print("oneformer.ops._C:", extension_status())
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        inputs = make_inputs(512, 1, torch.device(dev), torch.float32)
        impl = resolve_impl("auto", torch.device(dev))
        t0 = time.perf_counter()
        out = ms_deform_attn(*inputs)
        if dev == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        ref = ms_deform_attn(*inputs, impl="pytorch")
        print(f"{dev}: impl={impl} value {tuple(inputs[0].shape)} -> output {tuple(out.shape)} in {dt * 1e3:.1f} ms; "
              f"max |out - reference| = {(out - ref).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
