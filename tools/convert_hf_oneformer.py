#!/usr/bin/env python
"""Convert OneFormer weights between our Detectron2 layout and transformers' OneFormerForUniversalSegmentation.

Our layout is the original release's (``backbone.*``, ``sem_seg_head.pixel_decoder.*``, ``sem_seg_head.predictor.*``,
``task_mlp.*``, ``text_encoder.*`` / ``text_projector.*`` / ``prompt_ctx.*`` with MODEL.IS_TRAIN, ``criterion.*``);
the other side is the ``state_dict()`` of ``transformers.OneFormerForUniversalSegmentation`` (``model.*`` and
``criterion.*``).

    # ours -> HF: writes save_pretrained output (config.json + model.safetensors)
    python tools/convert_hf_oneformer.py --to-hf --config-file CFG.yaml --input ours.pth --output hf_dir/ \
        [KEY VALUE ...]
    # HF -> ours: writes {"model": state_dict} (tensors only, loadable with torch.load(weights_only=True))
    python tools/convert_hf_oneformer.py --from-hf --input hf_dir/ [--config-file CFG.yaml] --output ours.pth \
        [--output-config ours.yaml] [KEY VALUE ...]

Trailing ``KEY VALUE`` pairs are Detectron2 config overrides: with --to-hf they are applied to CFG before the
conversion; with --from-hf after the architecture keys derived from the HF config (use them for dataset / test keys).

Python API: :func:`ours_to_hf`, :func:`hf_to_ours`, :func:`oneformer_config_from_cfg`,
:func:`cfg_from_oneformer_config` and :func:`cfg_overrides_from_oneformer_config`.

Tensor mapping (every input key is consumed, or listed as ignored with a reason; unknown keys and missing keys raise
:class:`ConversionError` naming them; dtypes are never changed):

* Swin backbone: ``attn.qkv`` (3C, C) is split into HF's ``attention.{q,k,v}_proj`` (rows 0:C, C:2C, 2C:3C) and merged
  back; ``attn.proj`` <-> ``attention.o_proj``; ``attn.relative_position_bias_table`` <->
  ``attention.relative_position_bias.relative_position_bias_table`` (same (2w-1)^2 x heads layout and index formula);
  our persistent ``attn.relative_position_index`` buffer has no HF counterpart (HF recomputes it, non-persistent): it is
  checked against the canonical index and dropped, and re-created from the window size in the other direction.
  ``norm{i}`` <-> ``hidden_states_norms.stage{i+1}``. HF's ``swin.layernorm`` is not used by ``SwinBackbone``: it is
  ignored (HF -> ours) and written with its initial values ones/zeros (ours -> HF).
* ConvNeXt: ``downsample_layers.0.{0,1}`` <-> ``embeddings.{patch_embeddings,layernorm}``,
  ``downsample_layers.{i}.{0,1}`` <-> ``encoder.stages.{i}.downsampling_layer.{0,1}``, ``stages.{i}.{j}.{dwconv, norm,
  pwconv1, pwconv2, gamma}`` <-> ``encoder.stages.{i}.layers.{j}.{dwconv, layernorm, pwconv1, pwconv2,
  layer_scale_parameter}``, ``norm{i}`` <-> ``hidden_states_norms.stage{i+1}``.
* DiNAT (mapping only; transformers' DiNAT needs the ``natten`` package to run): ``patch_embed.proj.{0,1}`` <->
  ``embeddings.patch_embeddings.projection.{0,1}``, ``attn.qkv`` split into ``attention.self.{query,key,value}``,
  ``attn.rpb`` <-> ``attention.self.rpb``, ``attn.proj`` <-> ``attention.output.dense``, ``mlp.fc1/fc2`` <->
  ``intermediate.dense`` / ``output.dense``, ``norm1/norm2`` <-> ``layernorm_before/after``.
* Pixel decoder: ``input_proj`` <-> ``input_projections``, ``transformer.level_embed`` <-> ``level_embed``, encoder
  layer ``norm1/linear1/linear2/norm2`` <-> ``self_attn_layer_norm/fc1/fc2/final_layer_norm`` (the deformable
  attention names are equal), ``mask_features`` <-> ``mask_projection``, ``adapter_i.{weight,norm}`` /
  ``layer_i.{weight,norm}`` <-> ``adapter_i.{0,1}`` / ``layer_i.{0,1}``.
* Transformer decoder: ``class_transformer`` <-> ``decoder.query_transformer`` (same packed nn.MultiheadAttention
  names); the masked-attention layers' self-attention ``in_proj_weight/bias`` (packed) is split into HF's
  ``self_attn.self_attn.{q,k,v}_proj`` and merged back, cross-attention stays packed; ``query_embed`` <->
  ``queries_embedder``, ``class_input_proj`` <-> ``decoder.query_input_projection``, MLP ``layers.{i}`` <->
  ``layers.{i}.0``.
* Task / text: ``task_mlp`` <-> ``model.task_encoder.task_mlp``; ``text_encoder.transformer.resblocks.{i}.{attn, ln_1,
  mlp.c_fc, mlp.c_proj, ln_2}`` <-> ``model.text_mapper.text_encoder.transformer.layers.{i}.{self_attn, layer_norm1,
  mlp.fc1, mlp.fc2, layer_norm2}``; ``text_projector``, ``prompt_ctx`` <-> ``model.text_mapper.*``. Without the text
  branch in the target (MODEL.IS_TRAIN False / is_training False) the source's text keys are ignored (listed).
* ``criterion.empty_weight`` / ``criterion.logit_scale`` <-> HF's ``criterion.empty_weight`` / ``criterion.logit_scale``
  (equal semantics); when the source lacks them they are re-created from the config (ones with the last entry =
  no-object weight; ln(1 / contrastive temperature)).

HF checkpoints written by ``save_pretrained`` (and hub checkpoints from transformers 4.x) store the Swin backbone
under its legacy names (``encoder.encoder.*``, ``attention.self.query``, ``intermediate.dense`` ...);
:func:`normalize_hf_state_dict` (applied by :func:`hf_to_ours`) renames them to the in-memory names.

Config: the HF config has no inference thresholds (object-mask / overlap thresholds are post-processing arguments
of the image processor), so MODEL.TEST.* is neither read nor written. Unsupported settings raise NotImplementedError
naming the key: ResNet backbones; CONVS_DIM / MASK_DIM / HIDDEN_DIM not all equal or ENFORCE_INPUT_PROJ (transformers
keeps the decoder's input projections in a plain list, never saved, and applies query_input_projection(conv_dim) to
the mask features); PRE_NORM (transformers' query transformer has no encoder, so it drops the final encoder LayerNorm
that the original applies to the class-transformer memory even with 0 encoder layers); Swin APE; FPN NORM other than
GN; an HF encoder_feedforward_dim other than 1024 (ours is fixed, as in the original).

Behavioural differences of transformers' OneFormer that a conversion cannot remove (the weights map exactly):
its text encoder ignores the causal mask (text queries differ from the original's; class/mask logits are unaffected),
and with ``is_training=True`` its pixel-decoder encoder applies dropout even in eval mode.
"""
import argparse
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

# run as a script (python tools/convert_hf_oneformer.py): make the repository's `oneformer` package importable
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

logger = logging.getLogger("oneformer.convert_hf_oneformer")

__all__ = [
    "ConversionError",
    "ours_to_hf",
    "hf_to_ours",
    "oneformer_config_from_cfg",
    "cfg_from_oneformer_config",
    "cfg_overrides_from_oneformer_config",
    "normalize_hf_state_dict",
    "load_hf_dir",
    "main",
]

HF_BACKBONE = "model.pixel_level_module.encoder."
HF_PIXEL_DECODER = "model.pixel_level_module.decoder."
HF_TRANSFORMER = "model.transformer_module."
HF_DECODER = HF_TRANSFORMER + "decoder."
HF_TASK = "model.task_encoder.task_mlp."
HF_TEXT = "model.text_mapper."
OURS_PIXEL_DECODER = "sem_seg_head.pixel_decoder."
OURS_PREDICTOR = "sem_seg_head.predictor."
OURS_TEXT_PREFIXES = ("text_encoder.", "text_projector.", "prompt_ctx.")

RES_FEATURES = ["res2", "res3", "res4", "res5"]
HF_STAGES = ["stage1", "stage2", "stage3", "stage4"]
BACKBONES = {"D2SwinTransformer": "swin", "D2ConvNeXt": "convnext", "D2DiNAT": "dinat"}
BACKBONE_NAMES = {v: k for k, v in BACKBONES.items()}
# our pixel decoder's deformable-encoder FFN width is hard-coded (as in the original)
PIXEL_DECODER_FFN = 1024
LAYER_NORM_EPS = 1e-5
IMAGENET_RGB_MEAN = [123.675, 116.28, 103.53]
IMAGENET_RGB_STD = [58.395, 57.12, 57.375]


class ConversionError(ValueError):
    """A state dict does not match the expected layout (unknown, missing or inconsistent keys)."""


# ------------------------------------------------------------------------------------------------------------------
# architecture summary shared by both directions


@dataclass
class _Arch:
    backbone: str  # "swin" | "convnext" | "dinat"
    depths: List[int]
    stage_dims: List[int]
    window_size: int  # swin only
    qkv_bias: bool  # swin / dinat
    layer_scale: bool  # convnext: gamma present
    enc_layers: int  # deformable encoder layers of the pixel decoder
    num_fpn_levels: int
    dec_layers: int  # masked-attention layers (DEC_LAYERS - 1)
    class_dec_layers: int
    mask_embed_layers: int
    task_mlp_layers: int
    is_train: bool
    text_layers: int
    text_proj_layers: int
    n_ctx: int
    num_classes: int
    no_object_weight: float
    contrastive_temperature: Optional[float]


def _num_fpn_levels(strides: Sequence[int], common_stride: int) -> int:
    n = int(round(math.log2(min(strides[-3:])) - math.log2(common_stride)))
    if n < 0 or n > len(strides) - 3:
        raise NotImplementedError(
            f"common stride {common_stride} with backbone strides {list(strides)} gives {n} FPN levels; "
            f"expected 0..{len(strides) - 3}"
        )
    return n


def _arch_from_cfg(cfg) -> _Arch:
    name = cfg.MODEL.BACKBONE.NAME
    if name not in BACKBONES:
        raise NotImplementedError(
            f"MODEL.BACKBONE.NAME={name!r} is not supported by the HF conversion (supported: {sorted(BACKBONES)})"
        )
    kind = BACKBONES[name]
    of = cfg.MODEL.ONE_FORMER
    te = cfg.MODEL.TEXT_ENCODER
    window, qkv_bias, layer_scale = 0, True, False
    if kind == "swin":
        c = cfg.MODEL.SWIN
        depths = list(c.DEPTHS)
        dims = [int(c.EMBED_DIM * 2**i) for i in range(len(depths))]
        window, qkv_bias = int(c.WINDOW_SIZE), bool(c.QKV_BIAS)
        strides = [c.PATCH_SIZE * 2**i for i in range(len(depths))]
    elif kind == "convnext":
        c = cfg.MODEL.CONVNEXT
        depths, dims = list(c.DEPTHS), list(c.DIMS)
        layer_scale = c.LSIT > 0
        strides = [4, 8, 16, 32]
    else:
        c = cfg.MODEL.DiNAT
        depths = list(c.DEPTHS)
        dims = [int(c.EMBED_DIM * 2**i) for i in range(len(depths))]
        qkv_bias = bool(c.QKV_BIAS)
        strides = [4, 8, 16, 32]
    return _Arch(
        backbone=kind, depths=depths, stage_dims=dims, window_size=window, qkv_bias=qkv_bias,
        layer_scale=layer_scale, enc_layers=int(cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS),
        num_fpn_levels=_num_fpn_levels(strides, cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE),
        dec_layers=int(of.DEC_LAYERS) - 1, class_dec_layers=int(of.CLASS_DEC_LAYERS), mask_embed_layers=3,
        task_mlp_layers=2, is_train=bool(cfg.MODEL.IS_TRAIN), text_layers=int(te.NUM_LAYERS),
        text_proj_layers=int(te.PROJ_NUM_LAYERS), n_ctx=int(te.N_CTX),
        num_classes=int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES), no_object_weight=float(of.NO_OBJECT_WEIGHT),
        contrastive_temperature=of.CONTRASTIVE_TEMPERATURE,
    )


def _arch_from_hf(config) -> _Arch:
    bb = config.backbone_config
    kind = getattr(bb, "model_type", None)
    window, qkv_bias, layer_scale = 0, True, False
    if kind in ("swin", "dinat"):
        depths = list(bb.depths)
        dims = [int(bb.embed_dim * 2**i) for i in range(len(depths))]
        qkv_bias = bool(bb.qkv_bias)
        if kind == "swin":
            window = int(bb.window_size)
    elif kind == "convnext":
        depths, dims = list(bb.depths), list(bb.hidden_sizes)
        layer_scale = bb.layer_scale_init_value > 0
    else:
        raise NotImplementedError(
            f"HF backbone_config.model_type={kind!r} is not supported (supported: swin, convnext, dinat)"
        )
    return _Arch(
        backbone=kind, depths=depths, stage_dims=dims, window_size=window, qkv_bias=qkv_bias,
        layer_scale=layer_scale, enc_layers=int(config.encoder_layers),
        num_fpn_levels=_num_fpn_levels(list(config.strides), config.common_stride),
        dec_layers=int(config.decoder_layers) - 1, class_dec_layers=int(config.query_dec_layers),
        mask_embed_layers=3, task_mlp_layers=2, is_train=bool(config.is_training),
        text_layers=int(config.text_encoder_num_layers), text_proj_layers=int(config.text_encoder_proj_layers),
        n_ctx=int(config.text_encoder_n_ctx), num_classes=int(config.num_labels),
        no_object_weight=float(config.no_object_weight), contrastive_temperature=config.contrastive_temperature,
    )


# ------------------------------------------------------------------------------------------------------------------
# mapping rules


@dataclass
class _Rule:
    """One correspondence between our keys and HF keys.

    kind: "copy" (1 <-> 1), "qkv" (1 packed (3C, ...) <-> 3 HF tensors (C, ...)), "swin_index" (our
    relative_position_index buffer <-> nothing), "hf_unused_ln" (nothing <-> an unused HF LayerNorm weight/bias).
    default: for "copy", builds the value when the source lacks the key (with ``note`` as the reason).
    """

    kind: str
    ours: Tuple[str, ...]
    hf: Tuple[str, ...]
    note: str = ""
    default: Optional[Callable[[], torch.Tensor]] = None
    size: int = 0  # window size (swin_index) or LayerNorm width (hf_unused_ln)


def _copy(rules, ours, hf, default=None, note=""):
    rules.append(_Rule("copy", (ours,), (hf,), note=note, default=default))


def _copy_wb(rules, ours, hf, bias=True):
    _copy(rules, ours + ".weight", hf + ".weight")
    if bias:
        _copy(rules, ours + ".bias", hf + ".bias")


def _qkv(rules, ours, hf_q, hf_k, hf_v, bias=True):
    """ours: packed name without suffix (e.g. "...attn.qkv") or a pair of full names (weight, bias)."""
    if isinstance(ours, tuple):
        w, b = ours
    else:
        w, b = ours + ".weight", ours + ".bias"
    rules.append(_Rule("qkv", (w,), (hf_q + ".weight", hf_k + ".weight", hf_v + ".weight")))
    if bias:
        rules.append(_Rule("qkv", (b,), (hf_q + ".bias", hf_k + ".bias", hf_v + ".bias")))


def _mha(rules, ours, hf):
    """Packed nn.MultiheadAttention on both sides."""
    _copy(rules, ours + ".in_proj_weight", hf + ".in_proj_weight")
    _copy(rules, ours + ".in_proj_bias", hf + ".in_proj_bias")
    _copy_wb(rules, ours + ".out_proj", hf + ".out_proj")


def _backbone_rules(a: _Arch) -> List[_Rule]:
    r: List[_Rule] = []
    o, h = "backbone.", HF_BACKBONE
    n = len(a.depths)
    if a.backbone == "swin":
        s = h + "swin."
        _copy_wb(r, o + "patch_embed.proj", s + "embeddings.patch_embeddings.projection")
        _copy_wb(r, o + "patch_embed.norm", s + "embeddings.norm")
        for i, depth in enumerate(a.depths):
            for j in range(depth):
                ob, hb = f"{o}layers.{i}.blocks.{j}.", f"{s}encoder.layers.{i}.blocks.{j}."
                _copy_wb(r, ob + "norm1", hb + "layernorm_before")
                _qkv(r, ob + "attn.qkv", hb + "attention.q_proj", hb + "attention.k_proj", hb + "attention.v_proj",
                     bias=a.qkv_bias)
                _copy_wb(r, ob + "attn.proj", hb + "attention.o_proj")
                _copy(r, ob + "attn.relative_position_bias_table",
                      hb + "attention.relative_position_bias.relative_position_bias_table")
                r.append(_Rule("swin_index", (ob + "attn.relative_position_index",), (), size=a.window_size,
                               note="HF recomputes the relative position index from the window size "
                                    "(non-persistent buffer)"))
                _copy_wb(r, ob + "norm2", hb + "layernorm_after")
                _copy_wb(r, ob + "mlp.fc1", hb + "mlp.fc1")
                _copy_wb(r, ob + "mlp.fc2", hb + "mlp.fc2")
            if i < n - 1:
                _copy(r, f"{o}layers.{i}.downsample.reduction.weight",
                      f"{s}encoder.layers.{i}.downsample.reduction.weight")
                _copy_wb(r, f"{o}layers.{i}.downsample.norm", f"{s}encoder.layers.{i}.downsample.norm")
        r.append(_Rule("hf_unused_ln", (), (s + "layernorm.weight", s + "layernorm.bias"), size=a.stage_dims[-1],
                       note="SwinModel's final LayerNorm is not used by SwinBackbone (only hidden_states_norms are)"))
    elif a.backbone == "convnext":
        _copy_wb(r, o + "downsample_layers.0.0", h + "embeddings.patch_embeddings")
        _copy_wb(r, o + "downsample_layers.0.1", h + "embeddings.layernorm")
        for i, depth in enumerate(a.depths):
            if i > 0:
                _copy_wb(r, f"{o}downsample_layers.{i}.0", f"{h}encoder.stages.{i}.downsampling_layer.0")
                _copy_wb(r, f"{o}downsample_layers.{i}.1", f"{h}encoder.stages.{i}.downsampling_layer.1")
            for j in range(depth):
                ob, hb = f"{o}stages.{i}.{j}.", f"{h}encoder.stages.{i}.layers.{j}."
                _copy_wb(r, ob + "dwconv", hb + "dwconv")
                _copy_wb(r, ob + "norm", hb + "layernorm")
                _copy_wb(r, ob + "pwconv1", hb + "pwconv1")
                _copy_wb(r, ob + "pwconv2", hb + "pwconv2")
                if a.layer_scale:
                    _copy(r, ob + "gamma", hb + "layer_scale_parameter")
    else:  # dinat
        _copy_wb(r, o + "patch_embed.proj.0", h + "embeddings.patch_embeddings.projection.0")
        _copy_wb(r, o + "patch_embed.proj.1", h + "embeddings.patch_embeddings.projection.1")
        _copy_wb(r, o + "patch_embed.norm", h + "embeddings.norm")
        for i, depth in enumerate(a.depths):
            for j in range(depth):
                ob, hb = f"{o}levels.{i}.blocks.{j}.", f"{h}encoder.levels.{i}.layers.{j}."
                _copy_wb(r, ob + "norm1", hb + "layernorm_before")
                _qkv(r, ob + "attn.qkv", hb + "attention.self.query", hb + "attention.self.key",
                     hb + "attention.self.value", bias=a.qkv_bias)
                _copy(r, ob + "attn.rpb", hb + "attention.self.rpb")
                _copy_wb(r, ob + "attn.proj", hb + "attention.output.dense")
                _copy_wb(r, ob + "norm2", hb + "layernorm_after")
                _copy_wb(r, ob + "mlp.fc1", hb + "intermediate.dense")
                _copy_wb(r, ob + "mlp.fc2", hb + "output.dense")
            if i < n - 1:
                _copy(r, f"{o}levels.{i}.downsample.reduction.weight",
                      f"{h}encoder.levels.{i}.downsample.reduction.weight")
                _copy_wb(r, f"{o}levels.{i}.downsample.norm", f"{h}encoder.levels.{i}.downsample.norm")
    for i in range(n):
        _copy_wb(r, f"{o}norm{i}", f"{h}hidden_states_norms.stage{i + 1}")
    return r


def _pixel_decoder_rules(a: _Arch) -> List[_Rule]:
    r: List[_Rule] = []
    o, h = OURS_PIXEL_DECODER, HF_PIXEL_DECODER
    for k in range(3):
        _copy_wb(r, f"{o}input_proj.{k}.0", f"{h}input_projections.{k}.0")
        _copy_wb(r, f"{o}input_proj.{k}.1", f"{h}input_projections.{k}.1")
    _copy(r, o + "transformer.level_embed", h + "level_embed")
    for i in range(a.enc_layers):
        ol, hl = f"{o}transformer.encoder.layers.{i}.", f"{h}encoder.layers.{i}."
        for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            _copy_wb(r, ol + "self_attn." + name, hl + "self_attn." + name)
        _copy_wb(r, ol + "norm1", hl + "self_attn_layer_norm")
        _copy_wb(r, ol + "linear1", hl + "fc1")
        _copy_wb(r, ol + "linear2", hl + "fc2")
        _copy_wb(r, ol + "norm2", hl + "final_layer_norm")
    _copy_wb(r, o + "mask_features", h + "mask_projection")
    for idx in range(1, a.num_fpn_levels + 1):
        _copy(r, f"{o}adapter_{idx}.weight", f"{h}adapter_{idx}.0.weight")
        _copy_wb(r, f"{o}adapter_{idx}.norm", f"{h}adapter_{idx}.1")
        _copy(r, f"{o}layer_{idx}.weight", f"{h}layer_{idx}.0.weight")
        _copy_wb(r, f"{o}layer_{idx}.norm", f"{h}layer_{idx}.1")
    return r


def _predictor_rules(a: _Arch) -> List[_Rule]:
    r: List[_Rule] = []
    o, t, d = OURS_PREDICTOR, HF_TRANSFORMER, HF_DECODER
    for i in range(a.class_dec_layers):
        ol, hl = f"{o}class_transformer.decoder.layers.{i}.", f"{d}query_transformer.decoder.layers.{i}."
        _mha(r, ol + "self_attn", hl + "self_attn")
        _mha(r, ol + "multihead_attn", hl + "multihead_attn")
        for name in ("linear1", "linear2", "norm1", "norm2", "norm3"):
            _copy_wb(r, ol + name, hl + name)
    _copy_wb(r, o + "class_transformer.decoder.norm", d + "query_transformer.decoder.norm")
    for i in range(a.dec_layers):
        hl = f"{d}layers.{i}."
        osa = f"{o}transformer_self_attention_layers.{i}."
        hsa = hl + "self_attn.self_attn."
        _qkv(r, (osa + "self_attn.in_proj_weight", osa + "self_attn.in_proj_bias"),
             hsa + "q_proj", hsa + "k_proj", hsa + "v_proj")
        _copy_wb(r, osa + "self_attn.out_proj", hsa + "out_proj")
        _copy_wb(r, osa + "norm", hl + "self_attn.norm")
        oca = f"{o}transformer_cross_attention_layers.{i}."
        _mha(r, oca + "multihead_attn", hl + "cross_attn.multihead_attn")
        _copy_wb(r, oca + "norm", hl + "cross_attn.norm")
        off = f"{o}transformer_ffn_layers.{i}."
        for name in ("linear1", "linear2", "norm"):
            _copy_wb(r, off + name, hl + "ffn." + name)
    _copy_wb(r, o + "decoder_norm", d + "decoder_norm")
    _copy(r, o + "query_embed.weight", t + "queries_embedder.weight")
    _copy(r, o + "level_embed.weight", t + "level_embed.weight")
    _copy_wb(r, o + "class_input_proj", d + "query_input_projection")
    _copy_wb(r, o + "class_embed", d + "class_embed")
    for i in range(a.mask_embed_layers):
        _copy_wb(r, f"{o}mask_embed.layers.{i}", f"{d}mask_embed.layers.{i}.0")
    return r


def _task_text_criterion_rules(a: _Arch) -> List[_Rule]:
    r: List[_Rule] = []
    for i in range(a.task_mlp_layers):
        _copy_wb(r, f"task_mlp.layers.{i}", f"{HF_TASK}layers.{i}.0")
    if a.is_train:
        o, h = "text_encoder.", HF_TEXT + "text_encoder."
        _copy(r, o + "positional_embedding", h + "positional_embedding")
        _copy(r, o + "token_embedding.weight", h + "token_embedding.weight")
        for i in range(a.text_layers):
            ob, hb = f"{o}transformer.resblocks.{i}.", f"{h}transformer.layers.{i}."
            _mha(r, ob + "attn", hb + "self_attn")
            _copy_wb(r, ob + "ln_1", hb + "layer_norm1")
            _copy_wb(r, ob + "mlp.c_fc", hb + "mlp.fc1")
            _copy_wb(r, ob + "mlp.c_proj", hb + "mlp.fc2")
            _copy_wb(r, ob + "ln_2", hb + "layer_norm2")
        _copy_wb(r, o + "ln_final", h + "ln_final")
        for i in range(a.text_proj_layers):
            _copy_wb(r, f"text_projector.layers.{i}", f"{HF_TEXT}text_projector.layers.{i}.0")
        if a.n_ctx > 0:
            _copy(r, "prompt_ctx.weight", HF_TEXT + "prompt_ctx.weight")

    def empty_weight():
        w = torch.ones(a.num_classes + 1)
        w[-1] = a.no_object_weight
        return w

    def logit_scale():
        temperature = 0.07 if a.contrastive_temperature is None else a.contrastive_temperature
        return torch.tensor(math.log(1.0 / temperature))

    _copy(r, "criterion.empty_weight", "criterion.empty_weight", default=empty_weight,
          note="re-created from the config: ones, last entry = no-object weight")
    _copy(r, "criterion.logit_scale", "criterion.logit_scale", default=logit_scale,
          note="re-created from the config: ln(1 / contrastive temperature)")
    return r


def _rules(a: _Arch) -> List[_Rule]:
    return _backbone_rules(a) + _pixel_decoder_rules(a) + _predictor_rules(a) + _task_text_criterion_rules(a)


def _swin_index(window: int) -> torch.Tensor:
    from oneformer.modeling.backbone.swin import relative_position_index

    return relative_position_index(window)


def _convert(rules: List[_Rule], src: Dict[str, torch.Tensor], to_hf: bool,
             ignore: Callable[[str], Optional[str]], notes: Dict[str, str]) -> Dict[str, torch.Tensor]:
    """Apply ``rules`` to ``src``; records ignored / re-created keys with their reason in ``notes``."""
    out: Dict[str, torch.Tensor] = {}
    consumed = set()
    missing: List[str] = []
    problems: List[str] = []
    float_dtype = next((v.dtype for v in src.values() if torch.is_tensor(v) and v.is_floating_point()), torch.float32)

    def take(key):
        if key not in src:
            missing.append(key)
            return None
        consumed.add(key)
        return src[key]

    for rule in rules:
        s_keys, d_keys = (rule.ours, rule.hf) if to_hf else (rule.hf, rule.ours)
        if rule.kind == "copy":
            (sk,), (dk,) = s_keys, d_keys
            if sk not in src and rule.default is not None:
                out[dk] = rule.default()
                notes[dk] = rule.note
                continue
            t = take(sk)
            if t is not None:
                out[dk] = t
        elif rule.kind == "qkv":
            if to_hf:
                t = take(s_keys[0])
                if t is None:
                    continue
                if t.shape[0] % 3 != 0:
                    problems.append(f"{s_keys[0]}: packed q/k/v tensor of shape {tuple(t.shape)} is not divisible by 3")
                    continue
                for dk, part in zip(d_keys, t.chunk(3, dim=0)):
                    out[dk] = part.clone()
            else:
                parts = [take(k) for k in s_keys]
                if any(p is None for p in parts):
                    continue
                if len({p.shape for p in parts}) != 1:
                    problems.append(f"{s_keys}: q/k/v shapes differ {[tuple(p.shape) for p in parts]}")
                    continue
                out[d_keys[0]] = torch.cat(parts, dim=0)
        elif rule.kind == "swin_index":
            if to_hf:
                t = take(s_keys[0])
                if t is None:
                    continue
                expected = _swin_index(rule.size)
                if t.shape != expected.shape or not torch.equal(t.cpu().long(), expected):
                    problems.append(f"{s_keys[0]}: does not equal the canonical relative position index of window "
                                    f"size {rule.size} (shape {tuple(t.shape)})")
                    continue
                notes[s_keys[0]] = "dropped: " + rule.note
            else:
                out[d_keys[0]] = _swin_index(rule.size)
        elif rule.kind == "hf_unused_ln":
            if to_hf:
                w, b = d_keys
                out[w] = torch.ones(rule.size, dtype=float_dtype)
                out[b] = torch.zeros(rule.size, dtype=float_dtype)
                notes[w] = notes[b] = "written with its initial value (ones / zeros): " + rule.note
            else:
                for k in s_keys:
                    if k in src:
                        consumed.add(k)
                        notes[k] = "ignored: " + rule.note
        else:  # pragma: no cover - programming error
            raise AssertionError(rule.kind)

    unknown = []
    for k in src:
        if k in consumed:
            continue
        reason = ignore(k)
        if reason is None:
            unknown.append(k)
        else:
            notes[k] = "ignored: " + reason
    side, other = ("our", "HF") if to_hf else ("HF", "our")
    msgs = []
    if unknown:
        msgs.append(f"{len(unknown)} unknown {side} key(s) with no {other} counterpart: {_fmt(unknown)}")
    if missing:
        msgs.append(f"{len(missing)} expected {side} key(s) missing from the input: {_fmt(missing)}")
    msgs += problems
    if msgs:
        raise ConversionError("; ".join(msgs) + " (check that the config matches the checkpoint)")
    return out


def _fmt(keys: Sequence[str], limit: int = 20) -> str:
    keys = list(keys)
    s = ", ".join(repr(k) for k in keys[:limit])
    return s + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _unwrap(state_dict) -> Dict[str, torch.Tensor]:
    if not isinstance(state_dict, dict):
        raise TypeError(f"expected a state dict (mapping name -> tensor), got {type(state_dict).__name__}")
    bad = [k for k, v in state_dict.items() if not torch.is_tensor(v)]
    if bad:
        raise ConversionError(f"non-tensor entries in the state dict: {_fmt(bad)}")
    return dict(state_dict)


# ------------------------------------------------------------------------------------------------------------------
# HF key normalization (on-disk / legacy names -> in-memory names)

_LEGACY_SWIN_BLOCK = [
    (".attention.self.query.", ".attention.q_proj."),
    (".attention.self.key.", ".attention.k_proj."),
    (".attention.self.value.", ".attention.v_proj."),
    (".attention.self.relative_position_bias_table", ".attention.relative_position_bias.relative_position_bias_table"),
    (".attention.output.dense.", ".attention.o_proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
]


def normalize_hf_state_dict(hf_state_dict: Dict[str, torch.Tensor], hf_config,
                            notes: Optional[Dict[str, str]] = None) -> Dict[str, torch.Tensor]:
    """Rename HF Swin backbone keys from the legacy layout that ``save_pretrained`` writes (and transformers 4.x used)
    to the in-memory ``state_dict()`` names; other keys are returned unchanged. Legacy persistent
    ``relative_position_index`` buffers are checked against the canonical index and dropped."""
    if getattr(hf_config.backbone_config, "model_type", None) != "swin":
        return dict(hf_state_dict)
    notes = {} if notes is None else notes
    window = int(hf_config.backbone_config.window_size)
    out = {}
    bad = []
    for key, value in hf_state_dict.items():
        new = key
        if key.startswith(HF_BACKBONE):
            rest = key[len(HF_BACKBONE):]
            if rest.startswith("encoder.") or rest.startswith("embeddings."):
                rest = "swin." + rest
            if rest.startswith("swin.encoder.") and ".blocks." in rest:
                if rest.endswith(".attention.self.relative_position_index"):
                    if not torch.equal(value.cpu().long(), _swin_index(window)):
                        bad.append(key)
                    else:
                        notes[key] = "dropped: legacy relative position index buffer (equals the canonical one)"
                    continue
                for old, repl in _LEGACY_SWIN_BLOCK:
                    if old in rest:
                        rest = rest.replace(old, repl, 1)
                        break
            new = HF_BACKBONE + rest
        if new in out:
            raise ConversionError(f"HF keys {key!r} and another key both map to {new!r}")
        out[new] = value
    if bad:
        raise ConversionError(f"relative position index buffers that do not match window size {window}: {_fmt(bad)}")
    return out


# ------------------------------------------------------------------------------------------------------------------
# configs


_PRE_NORM_WHY = (
    "with pre-norm, the original class transformer (0 encoder layers) still applies its encoder's final LayerNorm "
    "(class_transformer.encoder.norm) to the memory, while transformers' query transformer has no encoder at all, "
    "so the converted model would not reproduce the outputs"
)


def _require(cond: bool, what: str):
    if not cond:
        raise NotImplementedError(what)


def _backbone_config_from_cfg(cfg):
    from transformers import ConvNextConfig, DinatConfig, SwinConfig

    kind = BACKBONES.get(cfg.MODEL.BACKBONE.NAME)
    if kind is None:
        raise NotImplementedError(
            f"MODEL.BACKBONE.NAME={cfg.MODEL.BACKBONE.NAME!r} has no transformers OneFormer counterpart handled here "
            f"(supported: {sorted(BACKBONES)}; e.g. Detectron2's ResNet layout is not mapped)"
        )
    in_chans = len(cfg.MODEL.PIXEL_MEAN)
    if kind == "swin":
        c = cfg.MODEL.SWIN
        _require(not c.APE, "MODEL.SWIN.APE=True: our absolute position embedding (1, C, g, g), bicubically resized, "
                            "has no equivalent in transformers' Swin")
        _require(c.PATCH_NORM, "MODEL.SWIN.PATCH_NORM=False: transformers' Swin always normalizes the patch embedding")
        _require(c.QK_SCALE is None, "MODEL.SWIN.QK_SCALE must be None (transformers' Swin uses head_dim**-0.5)")
        _require(sorted(c.OUT_FEATURES) == RES_FEATURES, "MODEL.SWIN.OUT_FEATURES must be res2..res5")
        return SwinConfig(
            image_size=int(c.PRETRAIN_IMG_SIZE), patch_size=int(c.PATCH_SIZE), num_channels=in_chans,
            embed_dim=int(c.EMBED_DIM), depths=list(c.DEPTHS), num_heads=list(c.NUM_HEADS),
            window_size=int(c.WINDOW_SIZE), mlp_ratio=float(c.MLP_RATIO), qkv_bias=bool(c.QKV_BIAS),
            hidden_dropout_prob=float(c.DROP_RATE), attention_probs_dropout_prob=float(c.ATTN_DROP_RATE),
            drop_path_rate=float(c.DROP_PATH_RATE), hidden_act="gelu", use_absolute_embeddings=False,
            layer_norm_eps=LAYER_NORM_EPS, out_features=list(HF_STAGES),
        )
    if kind == "convnext":
        c = cfg.MODEL.CONVNEXT
        _require(list(c.OUT_INDICES) == [0, 1, 2, 3], "MODEL.CONVNEXT.OUT_INDICES must be [0, 1, 2, 3]")
        _require(sorted(c.OUT_FEATURES) == RES_FEATURES, "MODEL.CONVNEXT.OUT_FEATURES must be res2..res5")
        _require(len(c.DEPTHS) == 4, "MODEL.CONVNEXT.DEPTHS must have 4 stages")
        return ConvNextConfig(
            num_channels=int(c.IN_CHANNELS), patch_size=4, num_stages=4, hidden_sizes=list(c.DIMS),
            depths=list(c.DEPTHS), hidden_act="gelu", layer_scale_init_value=float(c.LSIT),
            drop_path_rate=float(c.DROP_PATH_RATE), out_features=list(HF_STAGES),
        )
    c = cfg.MODEL.DiNAT
    _require(c.QK_SCALE is None, "MODEL.DiNAT.QK_SCALE must be None")
    _require(int(c.IN_PATCH_SIZE) == 4, "MODEL.DiNAT.IN_PATCH_SIZE must be 4")
    _require(list(c.OUT_INDICES) == [0, 1, 2, 3], "MODEL.DiNAT.OUT_INDICES must be (0, 1, 2, 3)")
    _require(sorted(c.OUT_FEATURES) == RES_FEATURES, "MODEL.DiNAT.OUT_FEATURES must be res2..res5")
    _require(c.DILATIONS is not None, "MODEL.DiNAT.DILATIONS must be set")
    return DinatConfig(
        patch_size=4, num_channels=in_chans, embed_dim=int(c.EMBED_DIM), depths=list(c.DEPTHS),
        num_heads=list(c.NUM_HEADS), kernel_size=int(c.KERNEL_SIZE), dilations=[list(d) for d in c.DILATIONS],
        mlp_ratio=float(c.MLP_RATIO), qkv_bias=bool(c.QKV_BIAS), hidden_dropout_prob=float(c.DROP_RATE),
        attention_probs_dropout_prob=float(c.ATTN_DROP_RATE), drop_path_rate=float(c.DROP_PATH_RATE),
        hidden_act="gelu", layer_norm_eps=LAYER_NORM_EPS, layer_scale_init_value=0.0, out_features=list(HF_STAGES),
    )


def _backbone_strides(cfg) -> List[int]:
    if cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer":
        return [int(cfg.MODEL.SWIN.PATCH_SIZE) * 2**i for i in range(4)]
    return [4, 8, 16, 32]


def oneformer_config_from_cfg(cfg):
    """Detectron2 cfg of our model -> ``transformers.OneFormerConfig`` of the same architecture.

    Raises NotImplementedError naming the setting that transformers' OneFormer cannot represent.
    """
    from transformers import OneFormerConfig

    m = cfg.MODEL
    head, of, te = m.SEM_SEG_HEAD, m.ONE_FORMER, m.TEXT_ENCODER
    _require(m.META_ARCHITECTURE == "OneFormer", f"MODEL.META_ARCHITECTURE={m.META_ARCHITECTURE!r} (need 'OneFormer')")
    _require(head.NAME == "OneFormerHead", f"MODEL.SEM_SEG_HEAD.NAME={head.NAME!r} (need 'OneFormerHead')")
    _require(head.PIXEL_DECODER_NAME == "MSDeformAttnPixelDecoder",
             f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={head.PIXEL_DECODER_NAME!r} (need 'MSDeformAttnPixelDecoder')")
    _require(of.TRANSFORMER_DECODER_NAME == "ContrastiveMultiScaleMaskedTransformerDecoder",
             f"MODEL.ONE_FORMER.TRANSFORMER_DECODER_NAME={of.TRANSFORMER_DECODER_NAME!r}")
    _require(of.TRANSFORMER_IN_FEATURE == "multi_scale_pixel_decoder",
             f"MODEL.ONE_FORMER.TRANSFORMER_IN_FEATURE={of.TRANSFORMER_IN_FEATURE!r}")
    _require(sorted(head.IN_FEATURES) == RES_FEATURES,
             f"MODEL.SEM_SEG_HEAD.IN_FEATURES={list(head.IN_FEATURES)} (transformers uses all of res2..res5)")
    _require(sorted(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES) == RES_FEATURES[1:],
             "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES must be res3..res5 (transformers uses "
             "the 3 coarsest maps)")
    _require(head.NORM == "GN", f"MODEL.SEM_SEG_HEAD.NORM={head.NORM!r}: transformers' FPN always uses GroupNorm(32)")
    _require(head.CONVS_DIM == head.MASK_DIM == of.HIDDEN_DIM,
             f"MODEL.SEM_SEG_HEAD.CONVS_DIM ({head.CONVS_DIM}), MASK_DIM ({head.MASK_DIM}) and "
             f"MODEL.ONE_FORMER.HIDDEN_DIM ({of.HIDDEN_DIM}) must be equal: transformers' decoder keeps its input "
             "projections in a plain list (never saved) and applies query_input_projection(conv_dim) to the "
             "mask features")
    _require(not of.ENFORCE_INPUT_PROJ, "MODEL.ONE_FORMER.ENFORCE_INPUT_PROJ=True (transformers does not save the "
                                        "projections)")
    _require(of.ENC_LAYERS == 0, f"MODEL.ONE_FORMER.ENC_LAYERS={of.ENC_LAYERS}: transformers' query transformer "
                                 "has no encoder")
    _require(of.DEC_LAYERS >= 2, f"MODEL.ONE_FORMER.DEC_LAYERS={of.DEC_LAYERS} (transformers needs >= 2)")
    _require(not of.PRE_NORM, "MODEL.ONE_FORMER.PRE_NORM=True: " + _PRE_NORM_WHY)
    strides = _backbone_strides(cfg)
    _num_fpn_levels(strides, head.COMMON_STRIDE)
    if m.IS_TRAIN:
        _require(te.WIDTH % 64 == 0, f"MODEL.TEXT_ENCODER.WIDTH={te.WIDTH} must be a multiple of 64")

    kwargs = dict(
        backbone_config=_backbone_config_from_cfg(cfg),
        num_labels=int(head.NUM_CLASSES),
        ignore_value=int(head.IGNORE_VALUE),
        num_queries=int(of.NUM_OBJECT_QUERIES),
        no_object_weight=float(of.NO_OBJECT_WEIGHT),
        class_weight=float(of.CLASS_WEIGHT),
        mask_weight=float(of.MASK_WEIGHT),
        dice_weight=float(of.DICE_WEIGHT),
        contrastive_weight=float(of.CONTRASTIVE_WEIGHT),
        contrastive_temperature=None if of.CONTRASTIVE_TEMPERATURE is None else float(of.CONTRASTIVE_TEMPERATURE),
        train_num_points=int(of.TRAIN_NUM_POINTS),
        oversample_ratio=float(of.OVERSAMPLE_RATIO),
        importance_sample_ratio=float(of.IMPORTANCE_SAMPLE_RATIO),
        layer_norm_eps=LAYER_NORM_EPS,
        is_training=bool(m.IS_TRAIN),
        use_auxiliary_loss=bool(of.DEEP_SUPERVISION),
        output_auxiliary_logits=True,
        strides=strides,
        task_seq_len=int(cfg.INPUT.TASK_SEQ_LEN),
        text_encoder_width=int(te.WIDTH),
        text_encoder_context_length=int(te.CONTEXT_LENGTH),
        text_encoder_num_layers=int(te.NUM_LAYERS),
        text_encoder_vocab_size=int(te.VOCAB_SIZE),
        text_encoder_proj_layers=int(te.PROJ_NUM_LAYERS),
        text_encoder_n_ctx=int(te.N_CTX),
        conv_dim=int(head.CONVS_DIM),
        mask_dim=int(head.MASK_DIM),
        hidden_dim=int(of.HIDDEN_DIM),
        encoder_feedforward_dim=PIXEL_DECODER_FFN,
        norm="GN",
        encoder_layers=int(head.TRANSFORMER_ENC_LAYERS),
        decoder_layers=int(of.DEC_LAYERS),
        use_task_norm=bool(of.USE_TASK_NORM),
        num_attention_heads=int(of.NHEADS),
        dropout=float(of.DROPOUT),
        dim_feedforward=int(of.DIM_FEEDFORWARD),
        pre_norm=bool(of.PRE_NORM),
        enforce_input_proj=False,
        query_dec_layers=int(of.CLASS_DEC_LAYERS),
        common_stride=int(head.COMMON_STRIDE),
    )
    names = _class_names(cfg)
    if names is not None:
        kwargs["id2label"] = {i: n for i, n in enumerate(names)}
        kwargs["label2id"] = {n: i for i, n in enumerate(names)}
        del kwargs["num_labels"]
    return OneFormerConfig(**kwargs)


def _class_names(cfg) -> Optional[List[str]]:
    """stuff_classes of the first training dataset when registered with exactly NUM_CLASSES names (else None)."""
    if not len(cfg.DATASETS.TRAIN):
        return None
    try:
        from detectron2.data import MetadataCatalog

        names = getattr(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]), "stuff_classes", None)
    except Exception:  # noqa: BLE001 - metadata is optional
        return None
    if names is None or len(names) != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES or len(set(names)) != len(names):
        return None
    return list(names)


def cfg_overrides_from_oneformer_config(hf_config, full: bool = True) -> List:
    """``transformers.OneFormerConfig`` -> flat [KEY, VALUE, KEY, VALUE, ...] Detectron2 overrides building our
    matching model (apply with ``cfg.merge_from_list``). With ``full`` (no base config file), also the input
    normalization (ImageNet RGB mean/std, as transformers' image processor) and TEST.DETECTIONS_PER_IMAGE."""
    c = hf_config
    bb = c.backbone_config
    kind = getattr(bb, "model_type", None)
    _require(kind in BACKBONE_NAMES, f"backbone_config.model_type={kind!r} (supported: swin, convnext, dinat)")
    out_features = list(getattr(bb, "out_features", []) or [])
    _require(out_features == HF_STAGES, f"backbone_config.out_features={out_features} (need {HF_STAGES})")
    _require(c.conv_dim == c.mask_dim == c.hidden_dim,
             f"conv_dim ({c.conv_dim}), mask_dim ({c.mask_dim}) and hidden_dim ({c.hidden_dim}) must be equal")
    _require(not c.enforce_input_proj, "enforce_input_proj=True (its projections are not saved by transformers)")
    _require(not c.pre_norm, "pre_norm=True: " + _PRE_NORM_WHY)
    _require(c.encoder_feedforward_dim == PIXEL_DECODER_FFN,
             f"encoder_feedforward_dim={c.encoder_feedforward_dim}: our pixel decoder's FFN width is fixed at "
             f"{PIXEL_DECODER_FFN} (as in the original)")
    _require(math.isclose(c.layer_norm_eps, LAYER_NORM_EPS), f"layer_norm_eps={c.layer_norm_eps} (ours: 1e-5)")
    _require(math.isclose(getattr(bb, "layer_norm_eps", LAYER_NORM_EPS), LAYER_NORM_EPS) or kind == "convnext",
             f"backbone_config.layer_norm_eps={getattr(bb, 'layer_norm_eps', None)} (ours: 1e-5)")
    _require(getattr(bb, "hidden_act", "gelu") == "gelu", f"backbone_config.hidden_act={bb.hidden_act!r} (ours: gelu)")
    _require(int(bb.num_channels) == 3 or not full, f"backbone_config.num_channels={bb.num_channels}")
    strides = [4, 8, 16, 32]
    if kind == "swin":
        strides = [int(bb.patch_size) * 2**i for i in range(4)]
    _require(list(c.strides) == strides, f"strides={list(c.strides)} do not match the backbone's {strides}")
    _num_fpn_levels(strides, c.common_stride)
    if c.is_training:
        _require(c.text_encoder_width % 64 == 0, f"text_encoder_width={c.text_encoder_width} must be a multiple of 64")

    o: List = ["MODEL.META_ARCHITECTURE", "OneFormer", "MODEL.BACKBONE.NAME", BACKBONE_NAMES[kind]]
    if kind == "swin":
        _require(not bb.use_absolute_embeddings, "backbone_config.use_absolute_embeddings=True is not supported")
        o += [
            "MODEL.SWIN.PRETRAIN_IMG_SIZE", int(bb.image_size if not isinstance(bb.image_size, (list, tuple))
                                                else bb.image_size[0]),
            "MODEL.SWIN.PATCH_SIZE", int(bb.patch_size),
            "MODEL.SWIN.EMBED_DIM", int(bb.embed_dim),
            "MODEL.SWIN.DEPTHS", [int(x) for x in bb.depths],
            "MODEL.SWIN.NUM_HEADS", [int(x) for x in bb.num_heads],
            "MODEL.SWIN.WINDOW_SIZE", int(bb.window_size),
            "MODEL.SWIN.MLP_RATIO", float(bb.mlp_ratio),
            "MODEL.SWIN.QKV_BIAS", bool(bb.qkv_bias),
            "MODEL.SWIN.DROP_RATE", float(bb.hidden_dropout_prob),
            "MODEL.SWIN.ATTN_DROP_RATE", float(bb.attention_probs_dropout_prob),
            "MODEL.SWIN.DROP_PATH_RATE", float(bb.drop_path_rate),
            "MODEL.SWIN.APE", False,
            "MODEL.SWIN.PATCH_NORM", True,
            "MODEL.SWIN.OUT_FEATURES", list(RES_FEATURES),
        ]
    elif kind == "convnext":
        _require(int(bb.num_stages) == 4 and int(bb.patch_size) == 4,
                 f"ConvNeXt num_stages={bb.num_stages}, patch_size={bb.patch_size} (need 4 and 4)")
        o += [
            "MODEL.CONVNEXT.IN_CHANNELS", int(bb.num_channels),
            "MODEL.CONVNEXT.DEPTHS", [int(x) for x in bb.depths],
            "MODEL.CONVNEXT.DIMS", [int(x) for x in bb.hidden_sizes],
            "MODEL.CONVNEXT.DROP_PATH_RATE", float(bb.drop_path_rate),
            "MODEL.CONVNEXT.LSIT", float(bb.layer_scale_init_value),
            "MODEL.CONVNEXT.OUT_INDICES", [0, 1, 2, 3],
            "MODEL.CONVNEXT.OUT_FEATURES", list(RES_FEATURES),
        ]
    else:
        _require(int(bb.patch_size) == 4, f"DiNAT patch_size={bb.patch_size} (need 4)")
        _require(float(bb.layer_scale_init_value) == 0.0,
                 f"DiNAT layer_scale_init_value={bb.layer_scale_init_value}: our DiNAT has no layer scale")
        o += [
            "MODEL.DiNAT.EMBED_DIM", int(bb.embed_dim),
            "MODEL.DiNAT.DEPTHS", [int(x) for x in bb.depths],
            "MODEL.DiNAT.NUM_HEADS", [int(x) for x in bb.num_heads],
            "MODEL.DiNAT.KERNEL_SIZE", int(bb.kernel_size),
            "MODEL.DiNAT.DILATIONS", [[int(x) for x in d] for d in bb.dilations],
            "MODEL.DiNAT.MLP_RATIO", float(bb.mlp_ratio),
            "MODEL.DiNAT.QKV_BIAS", bool(bb.qkv_bias),
            "MODEL.DiNAT.DROP_RATE", float(bb.hidden_dropout_prob),
            "MODEL.DiNAT.ATTN_DROP_RATE", float(bb.attention_probs_dropout_prob),
            "MODEL.DiNAT.DROP_PATH_RATE", float(bb.drop_path_rate),
            "MODEL.DiNAT.OUT_INDICES", [0, 1, 2, 3],
            "MODEL.DiNAT.OUT_FEATURES", list(RES_FEATURES),
        ]
    temperature = c.contrastive_temperature
    o += [
        "MODEL.SEM_SEG_HEAD.NAME", "OneFormerHead",
        "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "MSDeformAttnPixelDecoder",
        "MODEL.SEM_SEG_HEAD.IN_FEATURES", list(RES_FEATURES),
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES", list(RES_FEATURES[1:]),
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", int(c.num_labels),
        "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", int(c.ignore_value),
        "MODEL.SEM_SEG_HEAD.CONVS_DIM", int(c.conv_dim),
        "MODEL.SEM_SEG_HEAD.MASK_DIM", int(c.mask_dim),
        "MODEL.SEM_SEG_HEAD.NORM", "GN",
        "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", int(c.common_stride),
        "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", int(c.encoder_layers),
        "MODEL.ONE_FORMER.TRANSFORMER_DECODER_NAME", "ContrastiveMultiScaleMaskedTransformerDecoder",
        "MODEL.ONE_FORMER.TRANSFORMER_IN_FEATURE", "multi_scale_pixel_decoder",
        "MODEL.ONE_FORMER.HIDDEN_DIM", int(c.hidden_dim),
        "MODEL.ONE_FORMER.NUM_OBJECT_QUERIES", int(c.num_queries),
        "MODEL.ONE_FORMER.NHEADS", int(c.num_attention_heads),
        "MODEL.ONE_FORMER.DROPOUT", float(c.dropout),
        "MODEL.ONE_FORMER.DIM_FEEDFORWARD", int(c.dim_feedforward),
        "MODEL.ONE_FORMER.ENC_LAYERS", 0,
        "MODEL.ONE_FORMER.DEC_LAYERS", int(c.decoder_layers),
        "MODEL.ONE_FORMER.CLASS_DEC_LAYERS", int(c.query_dec_layers),
        "MODEL.ONE_FORMER.PRE_NORM", bool(c.pre_norm),
        "MODEL.ONE_FORMER.ENFORCE_INPUT_PROJ", False,
        "MODEL.ONE_FORMER.USE_TASK_NORM", bool(c.use_task_norm),
        "MODEL.ONE_FORMER.DEEP_SUPERVISION", bool(c.use_auxiliary_loss),
        "MODEL.ONE_FORMER.NO_OBJECT_WEIGHT", float(c.no_object_weight),
        "MODEL.ONE_FORMER.CLASS_WEIGHT", float(c.class_weight),
        "MODEL.ONE_FORMER.MASK_WEIGHT", float(c.mask_weight),
        "MODEL.ONE_FORMER.DICE_WEIGHT", float(c.dice_weight),
        "MODEL.ONE_FORMER.CONTRASTIVE_WEIGHT", float(c.contrastive_weight),
        "MODEL.ONE_FORMER.CONTRASTIVE_TEMPERATURE", 0.07 if temperature is None else float(temperature),
        "MODEL.ONE_FORMER.TRAIN_NUM_POINTS", int(c.train_num_points),
        "MODEL.ONE_FORMER.OVERSAMPLE_RATIO", float(c.oversample_ratio),
        "MODEL.ONE_FORMER.IMPORTANCE_SAMPLE_RATIO", float(c.importance_sample_ratio),
        "MODEL.IS_TRAIN", bool(c.is_training),
        "MODEL.TEXT_ENCODER.WIDTH", int(c.text_encoder_width),
        "MODEL.TEXT_ENCODER.CONTEXT_LENGTH", int(c.text_encoder_context_length),
        "MODEL.TEXT_ENCODER.NUM_LAYERS", int(c.text_encoder_num_layers),
        "MODEL.TEXT_ENCODER.VOCAB_SIZE", int(c.text_encoder_vocab_size),
        "MODEL.TEXT_ENCODER.PROJ_NUM_LAYERS", int(c.text_encoder_proj_layers),
        "MODEL.TEXT_ENCODER.N_CTX", int(c.text_encoder_n_ctx),
        "INPUT.TASK_SEQ_LEN", int(c.task_seq_len),
        "INPUT.MAX_SEQ_LEN", int(c.text_encoder_context_length),
    ]
    if full:
        o += [
            "INPUT.FORMAT", "RGB",
            "MODEL.PIXEL_MEAN", list(IMAGENET_RGB_MEAN),
            "MODEL.PIXEL_STD", list(IMAGENET_RGB_STD),
            "TEST.DETECTIONS_PER_IMAGE", int(c.num_queries),
        ]
    return o


def _base_cfg():
    from detectron2.config import get_cfg

    from oneformer.config import add_oneformer_config_all

    return add_oneformer_config_all(get_cfg())


def cfg_from_oneformer_config(hf_config, base_cfg=None):
    """``transformers.OneFormerConfig`` -> Detectron2 CfgNode that builds our matching model.

    ``base_cfg`` (e.g. loaded from a model-zoo YAML for its dataset / test settings) is cloned and its architecture
    keys are overwritten from ``hf_config``; without it, the project defaults are used.
    """
    cfg = _base_cfg() if base_cfg is None else base_cfg.clone()
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.merge_from_list(cfg_overrides_from_oneformer_config(hf_config, full=base_cfg is None))
    if was_frozen:
        cfg.freeze()
    return cfg


# ------------------------------------------------------------------------------------------------------------------
# target-layout checks


def _check_layout(sd: Dict[str, torch.Tensor], expected: Optional[Dict[str, torch.Size]], what: str):
    if expected is None:
        return
    unexpected = [k for k in sd if k not in expected]
    missing = [k for k in expected if k not in sd]
    shapes = [f"{k}: {tuple(sd[k].shape)} vs {tuple(expected[k])}" for k in sd
              if k in expected and tuple(sd[k].shape) != tuple(expected[k])]
    msgs = []
    if unexpected:
        msgs.append(f"keys not in {what}: {_fmt(unexpected)}")
    if missing:
        msgs.append(f"keys of {what} not produced: {_fmt(missing)}")
    if shapes:
        msgs.append(f"shape mismatches (converted vs {what}): {_fmt(shapes)}")
    if msgs:
        raise ConversionError("; ".join(msgs))


def _hf_layout(config) -> Optional[Dict[str, torch.Size]]:
    """Names and shapes of transformers' model for ``config`` (built on the meta device), or None when it cannot be
    built here (e.g. DiNAT without the natten package)."""
    from transformers import OneFormerForUniversalSegmentation

    try:
        with torch.device("meta"):
            model = OneFormerForUniversalSegmentation(config)
    except Exception as e:  # noqa: BLE001
        logger.warning("cannot build transformers' OneFormer to check the converted layout (%s: %s)",
                       type(e).__name__, e)
        return None
    return {k: v.shape for k, v in model.state_dict().items()}


def _ours_layout(cfg) -> Optional[Dict[str, torch.Size]]:
    """Names and shapes of our model for ``cfg`` (built on the meta device), or None when it cannot be built."""
    try:
        import oneformer  # noqa: F401  (registers the components)
        from detectron2.modeling import META_ARCH_REGISTRY

        with torch.device("meta"):
            model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    except Exception as e:  # noqa: BLE001
        logger.warning("cannot build our model to check the converted layout (%s: %s)", type(e).__name__, e)
        return None
    return {k: v.shape for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------------------------------
# public conversion API


def ours_to_hf(state_dict: Dict[str, torch.Tensor], cfg, *, notes: Optional[Dict[str, str]] = None,
               check: bool = True):
    """Our (original-layout) state dict + its Detectron2 cfg -> (``OneFormerConfig``, HF state dict).

    The HF state dict has the in-memory names of ``OneFormerForUniversalSegmentation.state_dict()`` and loads into it
    with ``strict=True``. ``notes`` (optional dict) receives ignored / dropped / re-created keys with the reason.
    With ``check``, the result is compared with transformers' model layout (names and shapes).
    """
    notes = {} if notes is None else notes
    sd = _unwrap(state_dict)
    config = oneformer_config_from_cfg(cfg)
    arch = _arch_from_cfg(cfg)

    def ignore(key):
        if not arch.is_train and key.startswith(OURS_TEXT_PREFIXES):
            return "text branch (MODEL.IS_TRAIN False: transformers' is_training=False model has no text_mapper)"
        return None

    out = _convert(_rules(arch), sd, True, ignore, notes)
    if check:
        _check_layout(out, _hf_layout(config), "transformers' OneFormerForUniversalSegmentation")
    for k, why in notes.items():
        logger.info("%s: %s", k, why)
    return config, out


def hf_to_ours(hf_state_dict: Dict[str, torch.Tensor], hf_config, *, base_cfg=None,
               notes: Optional[Dict[str, str]] = None, check: bool = True):
    """HF state dict (in-memory or on-disk/legacy names) + ``OneFormerConfig`` -> (our state dict, Detectron2 cfg).

    The cfg is :func:`cfg_from_oneformer_config` (``base_cfg`` optional); our model built from it loads the state
    dict with ``strict=True``. ``notes`` receives ignored / re-created keys with the reason. With ``check``, the result
    is compared with our model's layout (names and shapes).
    """
    notes = {} if notes is None else notes
    sd = normalize_hf_state_dict(_unwrap(hf_state_dict), hf_config, notes)
    cfg = cfg_from_oneformer_config(hf_config, base_cfg)
    arch = _arch_from_hf(hf_config)

    def ignore(key):
        if not arch.is_train and key.startswith(HF_TEXT):
            return "text_mapper of an is_training=False config (our MODEL.IS_TRAIN False model has no text branch)"
        return None

    out = _convert(_rules(arch), sd, False, ignore, notes)
    if check:
        _check_layout(out, _ours_layout(cfg), "our OneFormer model")
    for k, why in notes.items():
        logger.info("%s: %s", k, why)
    return out, cfg


# ------------------------------------------------------------------------------------------------------------------
# files


def load_ours_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """A Detectron2 checkpoint (.pth; weights under "model", or a bare state dict), read with weights_only=True."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: expected a dict of tensors (or {{'model': ...}}), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if bad:
        raise ConversionError(f"{path}: non-tensor entries in the state dict: {_fmt(bad)}")
    return dict(obj)


def load_hf_dir(path: str):
    """(OneFormerConfig, state dict with the file's names) from a local ``save_pretrained`` directory."""
    from transformers import OneFormerConfig

    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path!r} is not a directory (expected save_pretrained output)")
    config = OneFormerConfig.from_pretrained(path, local_files_only=True)
    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    binary = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(single) or os.path.isfile(index):
        from safetensors.torch import load_file

        if os.path.isfile(single):
            files = [single]
        else:
            with open(index) as f:
                files = [os.path.join(path, n) for n in sorted(set(json.load(f)["weight_map"].values()))]
        sd: Dict[str, torch.Tensor] = {}
        for fn in files:
            sd.update(load_file(fn))
    elif os.path.isfile(binary):
        sd = torch.load(binary, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{path!r} has no model.safetensors(.index.json) or pytorch_model.bin")
    return config, sd


def _save_hf(config, sd: Dict[str, torch.Tensor], out_dir: str, verify: bool):
    from transformers import OneFormerForUniversalSegmentation

    os.makedirs(out_dir, exist_ok=True)
    try:
        model = OneFormerForUniversalSegmentation(config)
    except Exception as e:  # noqa: BLE001 - e.g. DiNAT without natten
        logger.warning("cannot instantiate transformers' model (%s: %s); writing config.json and model.safetensors "
                       "directly", type(e).__name__, e)
        from safetensors.torch import save_file

        config.save_pretrained(out_dir)
        save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(out_dir, "model.safetensors"),
                  metadata={"format": "pt"})
        return
    result = model.load_state_dict(sd, strict=verify)
    if not verify and (result.missing_keys or result.unexpected_keys):
        logger.warning("non-strict load: missing %s, unexpected %s", result.missing_keys, result.unexpected_keys)
    model.save_pretrained(out_dir)


def _load_cfg(config_file: Optional[str], opts: Sequence[str]):
    cfg = _base_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(list(opts))
    return cfg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert OneFormer weights between our Detectron2 layout and transformers' "
                    "OneFormerForUniversalSegmentation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to-hf", action="store_true", help="ours (.pth) -> HF directory")
    direction.add_argument("--from-hf", action="store_true", help="HF directory -> ours (.pth)")
    parser.add_argument("--config-file", default="", help="Detectron2 YAML (required with --to-hf)")
    parser.add_argument("--input", required=True, help="ours.pth (--to-hf) or a save_pretrained directory (--from-hf)")
    parser.add_argument("--output", required=True, help="HF directory (--to-hf) or ours.pth (--from-hf)")
    parser.add_argument("--output-config", default="", help="--from-hf: also write the Detectron2 config (YAML)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip building the target model and loading the converted weights into it strictly")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="Detectron2 config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error(f"config overrides must be KEY VALUE pairs, got {args.opts}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    notes: Dict[str, str] = {}
    if args.to_hf:
        if not args.config_file:
            parser.error("--to-hf needs --config-file (the architecture of the input checkpoint)")
        cfg = _load_cfg(args.config_file, args.opts)
        sd = load_ours_checkpoint(args.input)
        config, hf_sd = ours_to_hf(sd, cfg, notes=notes)
        _save_hf(config, hf_sd, args.output, verify=not args.no_verify)
        print(f"wrote {len(hf_sd)} tensors to {args.output} ({len(notes)} key(s) ignored/re-created, see the log)")
        return 0

    config, hf_sd = load_hf_dir(args.input)
    base = None
    if args.config_file:
        base = _base_cfg()
        base.merge_from_file(args.config_file)
    sd, cfg = hf_to_ours(hf_sd, config, base_cfg=base, notes=notes)
    if args.opts:
        cfg.merge_from_list(list(args.opts))
    if not args.no_verify:
        import oneformer  # noqa: F401
        from detectron2.modeling import build_model

        check_cfg = cfg.clone()
        check_cfg.MODEL.DEVICE = "cpu"
        build_model(check_cfg).load_state_dict(sd, strict=True)
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    torch.save({"model": sd}, args.output)
    if args.output_config:
        with open(args.output_config, "w") as f:
            f.write(cfg.dump())
    print(f"wrote {len(sd)} tensors to {args.output} ({len(notes)} key(s) ignored/re-created, see the log)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
