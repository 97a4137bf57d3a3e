"""Activation checkpointing (MODEL.BACKBONE.ACTIVATION_CHECKPOINT, MODEL.SEM_SEG_HEAD.ENCODER_ACTIVATION_CHECKPOINT):
for Swin, ConvNeXt, DiNAT, ResNet and the pixel decoder's encoder layers, the checkpointed model recomputes its
blocks in the backward pass, gives the same outputs and gradients (with drop path and dropout on), keeps BatchNorm
running statistics as without checkpointing, keeps its parameter names, and evaluates without recomputation."""
import copy

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model

from oneformer.config import add_oneformer_config_all
from oneformer.modeling.activation_checkpoint import (apply_activation_checkpointing, backbone_blocks,
                                                      checkpoint_module, encoder_layers)
from oneformer.modeling.pixel_decoder.msdeformattn import MSDeformAttnPixelDecoder
from tests.modeling.pixel_decoder.test_msdeformattn import TINY_SHAPES, _features, _sizes_for_image
from tests.modeling.pixel_decoder.test_msdeformattn import _tiny_cfg as decoder_cfg
from tests.tiny import tiny_cfg


def _backbone_cfg(kind):
    cfg = add_oneformer_config_all(get_cfg())
    if kind == "swin":
        cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
        cfg.MODEL.SWIN.EMBED_DIM, cfg.MODEL.SWIN.DEPTHS, cfg.MODEL.SWIN.NUM_HEADS = 16, [2, 2, 2, 2], [1, 2, 2, 4]
        cfg.MODEL.SWIN.WINDOW_SIZE, cfg.MODEL.SWIN.DROP_PATH_RATE = 4, 0.3
    elif kind == "convnext":
        cfg.MODEL.BACKBONE.NAME = "D2ConvNeXt"
        cfg.MODEL.CONVNEXT.DEPTHS, cfg.MODEL.CONVNEXT.DIMS = [1, 1, 2, 1], [8, 16, 24, 32]
        cfg.MODEL.CONVNEXT.DROP_PATH_RATE = 0.3
    elif kind == "dinat":
        d = cfg.MODEL.DiNAT
        cfg.MODEL.BACKBONE.NAME = "D2DiNAT"
        d.EMBED_DIM, d.MLP_RATIO, d.DEPTHS, d.NUM_HEADS = 16, 2.0, [1, 2, 1, 1], [1, 2, 2, 4]
        d.KERNEL_SIZE, d.DILATIONS, d.DROP_PATH_RATE = 3, [[2], [1, 3], [2], [1]], 0.3
    else:  # Detectron2's ResNet with real BatchNorm (running statistics)
        cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        r = cfg.MODEL.RESNETS
        r.DEPTH, r.RES2_OUT_CHANNELS, r.STEM_OUT_CHANNELS, r.NORM = 18, 64, 16, "BN"
        r.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return cfg


def _count_calls(module):
    """Calls of the first leaf module inside ``module`` (recomputation runs it again)."""
    leaf = next(m for m in module.modules() if not list(m.children()) and list(m.parameters(recurse=False)))
    calls = []
    leaf.register_forward_hook(lambda *a: calls.append(1))
    return calls


def _step(model, run, seed=5):
    torch.manual_seed(seed)  # the same drop-path / dropout draws in both models
    outputs = run(model)
    loss = sum((o.float() ** 2).mean() for o in outputs)
    loss.backward()
    return [o.detach() for o in outputs], {n: p.grad.clone() for n, p in model.named_parameters()
                                           if p.grad is not None}


@pytest.mark.parametrize("kind", ["swin", "convnext", "dinat", "resnet"])
def test_backbone_blocks_are_recomputed_with_the_same_gradients(kind):
    cfg = _backbone_cfg(kind)
    torch.manual_seed(0)
    plain = build_backbone(cfg).train()
    ckpt = copy.deepcopy(plain)
    cfg.MODEL.BACKBONE.ACTIVATION_CHECKPOINT = True
    done = apply_activation_checkpointing(ckpt, torch.nn.Module(), cfg)
    blocks = backbone_blocks(ckpt)
    assert done == {"backbone": len(blocks), "pixel_decoder": 0} and len(blocks) >= 4
    assert list(plain.state_dict()) == list(ckpt.state_dict())
    calls_plain, calls_ckpt = _count_calls(backbone_blocks(plain)[0]), _count_calls(blocks[0])
    x = torch.randn(2, 3, 64, 64)

    def run(m):
        return list(m(x).values())

    out_p, grads_p = _step(plain, run)
    out_c, grads_c = _step(ckpt, run)
    assert len(calls_plain) == 1 and len(calls_ckpt) == 2  # forward, then the recomputation in backward
    for a, b in zip(out_p, out_c):
        torch.testing.assert_close(a, b)
    assert grads_p.keys() == grads_c.keys() and grads_p
    for name in grads_p:
        torch.testing.assert_close(grads_p[name], grads_c[name], rtol=1e-5, atol=1e-6, msg=name)
    for (name, a), b in zip(plain.named_buffers(), ckpt.buffers()):  # BN statistics updated once, not twice
        torch.testing.assert_close(a, b, msg=name)
    if kind == "resnet":
        bn = next(m for m in ckpt.modules() if isinstance(m, torch.nn.BatchNorm2d))
        assert int(bn.num_batches_tracked) == 1 and bn.momentum == 0.1
    ckpt.eval()
    calls_ckpt.clear()
    with torch.no_grad():
        ckpt(x)
    assert len(calls_ckpt) == 1  # evaluation: plain forward


def test_pixel_decoder_encoder_layers():
    cfg = decoder_cfg()
    torch.manual_seed(0)
    plain = MSDeformAttnPixelDecoder(cfg, TINY_SHAPES).train()  # dropout 0.1 on
    ckpt = copy.deepcopy(plain)
    cfg.MODEL.SEM_SEG_HEAD.ENCODER_ACTIVATION_CHECKPOINT = True
    head = torch.nn.Module()
    head.pixel_decoder = ckpt
    assert apply_activation_checkpointing(torch.nn.Module(), head, cfg) == {"backbone": 0, "pixel_decoder": 2}
    calls = _count_calls(encoder_layers(head)[0])
    feats = _features(_sizes_for_image(64, 64))

    def run(m):
        mask_features, _, multi_scale, _, _ = m.forward_features(feats)
        return [mask_features] + list(multi_scale)

    out_p, grads_p = _step(plain, run)
    out_c, grads_c = _step(ckpt, run)
    assert len(calls) == 2
    for a, b in zip(out_p, out_c):
        torch.testing.assert_close(a, b)
    for name in grads_p:
        torch.testing.assert_close(grads_p[name], grads_c[name], rtol=1e-5, atol=1e-6, msg=name)


def test_built_model_and_copies():
    """build_model with both keys (the config path users take); a deep copy checkpoints its own weights."""
    cfg = tiny_cfg(is_train=True)
    cfg.MODEL.BACKBONE.ACTIVATION_CHECKPOINT = True
    cfg.MODEL.SEM_SEG_HEAD.ENCODER_ACTIVATION_CHECKPOINT = True
    model = build_model(cfg)
    assert all(layer.use_checkpoint for layer in model.backbone.layers)
    layers = encoder_layers(model.sem_seg_head)
    assert layers and all(layer._activation_checkpointed for layer in layers)
    plain = build_model(tiny_cfg(is_train=True))
    assert list(plain.state_dict()) == list(model.state_dict())
    # the copy's forward runs the copy's own weights (no closure over the original)
    layer = layers[0]
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
    src = torch.randn(1, 5, layer.norm1.normalized_shape[0])
    ref = torch.zeros(1, 5, 3, 2) + 0.5
    shapes, start = torch.tensor([[1, 2], [1, 2], [1, 1]]), torch.tensor([0, 2, 4])
    out = twin(src, None, ref, shapes, start)
    assert torch.allclose(out, torch.zeros_like(out), atol=1e-6)  # LayerNorm with zero weight and bias


def test_unknown_backbone_is_named():
    class Other(torch.nn.Module):
        pass

    with pytest.raises(ValueError, match="no checkpointable blocks known for the backbone Other"):
        backbone_blocks(Other())
    m = checkpoint_module(torch.nn.Linear(2, 2))
    assert checkpoint_module(m) is m
    x = torch.randn(3, 2)
    assert torch.equal(m(x), torch.nn.functional.linear(x, m.weight, m.bias))
