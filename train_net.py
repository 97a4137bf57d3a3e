#!/usr/bin/env python
"""Train or evaluate OneFormer with Detectron2: ``oneformer.train_net``'s command line (its docstring has the
details).

    python train_net.py --config-file configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml --num-gpus 8
    python train_net.py --config-file ... --num-gpus 8 --resume                  # continue from OUTPUT_DIR
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS model.pth MODEL.TEST.TASK semantic
    python train_net.py --config-file ... --num-gpus 2 MODEL.DEVICE cpu         # 2 CPU processes (gloo)

A launcher of your own imports the same code from the package: ``from oneformer import train_net``.
"""
from oneformer.train_net import *  # noqa: F401,F403  (the names launchers written for the original import from here)
from oneformer.train_net import cli

if __name__ == "__main__":
    cli()
