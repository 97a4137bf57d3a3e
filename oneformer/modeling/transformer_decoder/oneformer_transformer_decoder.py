"""``ContrastiveMultiScaleMaskedTransformerDecoder``: OneFormer's task-conditioned masked-attention decoder.

Query initialization (paper §3.2, as the released weights expect): the task token Q_task (B, C) is normalized with
``decoder_norm`` and fed, repeated N−1 times, to ``class_transformer`` (2 decoder layers) whose memory/value is the
sine positional encoding of the 1/4-scale mask features and whose key offset is ``class_input_proj(mask_features)``
(the original's src/pos order, which makes image content steer only the attention weights). Its N−1 outputs plus
Q_task itself as the last query are the initial object queries; their (B, N, C) form is returned as
``contrastive_logits`` for the query-text contrastive loss. Then ``DEC_LAYERS − 1`` masked-attention layers
(cross-attention → self-attention → FFN) cycle over the three pixel-decoder scales, with a prediction after each
layer and on the initial queries.
"""
from typing import Dict, List, Optional

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d
from detectron2.utils.registry import Registry
from torch import nn
from torch.nn import functional as F

from ..cpu_linear import OneDNNLinear, onednn_feature_product
from .attention import multi_head_attention
from .mlp import MLP
from .position_encoding import PositionEmbeddingSine
from .transformer import Transformer

__all__ = [
    "TRANSFORMER_DECODER_REGISTRY",
    "build_transformer_decoder",
    "ContrastiveMultiScaleMaskedTransformerDecoder",
    "SelfAttentionLayer",
    "CrossAttentionLayer",
    "FFNLayer",
]

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Registry for transformer decoders of OneFormerHead; built from MODEL.ONE_FORMER.TRANSFORMER_DECODER_NAME.
"""


def build_transformer_decoder(cfg, in_channels: int, mask_classification: bool = True) -> nn.Module:
    """Build the transformer decoder named by ``cfg.MODEL.ONE_FORMER.TRANSFORMER_DECODER_NAME``."""
    name = cfg.MODEL.ONE_FORMER.TRANSFORMER_DECODER_NAME
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, mask_classification)


def _with_pos(x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    return x if pos is None else x + pos


def _xavier_init(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """Query self-attention with residual and LayerNorm (post-norm unless normalize_before). (N, B, C) → same."""

    def __init__(self, d_model, nhead, dropout=0.0, normalize_before=False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt, query_pos: Optional[torch.Tensor] = None):
        x = self.norm(tgt) if self.normalize_before else tgt
        q = k = _with_pos(x, query_pos)
        tgt = tgt + self.dropout(multi_head_attention(self.self_attn, q, k, x))
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Masked cross-attention from queries (N, B, C) to a feature level (HW, B, C)."""

    def __init__(self, d_model, nhead, dropout=0.0, normalize_before=False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt, memory, memory_mask=None, pos=None, query_pos=None):
        """memory_mask: bool (B, 1, N, HW) or (B*heads, N, HW), True where a query may not look."""
        x = self.norm(tgt) if self.normalize_before else tgt
        out = multi_head_attention(self.multihead_attn, _with_pos(x, query_pos), _with_pos(memory, pos), memory,
                                   memory_mask)
        tgt = tgt + self.dropout(out)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Two-layer ReLU feed-forward block with residual and LayerNorm. (N, B, C) → same."""

    def __init__(self, d_model, dim_feedforward=2048, dropout=0.0, normalize_before=False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt):
        x = self.norm(tgt) if self.normalize_before else tgt
        tgt = tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        return tgt if self.normalize_before else self.norm(tgt)


@TRANSFORMER_DECODER_REGISTRY.register()
class ContrastiveMultiScaleMaskedTransformerDecoder(nn.Module):
    _version = 2

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dropout: float,
        dim_feedforward: int,
        enc_layers: int,
        is_train: bool,
        dec_layers: int,
        class_dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        use_task_norm: bool,
    ):
        """
        Args:
            in_channels: channels of the three multi-scale features (the pixel decoder's conv_dim).
            num_classes: K; the class head predicts K + 1 logits (the last is "no object").
            num_queries: N object queries (N−1 from the class transformer + the task token).
            dec_layers: masked-attention layers (the config's DEC_LAYERS − 1).
            class_dec_layers / enc_layers: decoder / encoder layers of the class transformer.
            is_train: also return the initial queries as ``contrastive_logits``.
            use_task_norm: normalize the task token with ``decoder_norm`` before use.
        """
        super().__init__()
        if not mask_classification:
            raise ValueError("OneFormer's decoder always classifies masks (mask_classification=True)")
        if num_queries < 2:
            raise ValueError(f"num_queries must be at least 2 (N−1 object queries + the task token), got {num_queries}")
        self.mask_classification = mask_classification
        self.is_train = is_train
        self.use_task_norm = use_task_norm
        self.num_queries = num_queries
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.num_feature_levels = 3

        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.class_transformer = Transformer(
            d_model=hidden_dim, dropout=dropout, nhead=nheads, dim_feedforward=dim_feedforward,
            num_encoder_layers=enc_layers, num_decoder_layers=class_dec_layers, normalize_before=pre_norm,
            return_intermediate_dec=False,
        )
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout=0.0, normalize_before=pre_norm) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(proj)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())
        self.class_input_proj = Conv2d(mask_dim, hidden_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.class_input_proj)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels, mask_classification):
        of = cfg.MODEL.ONE_FORMER
        if of.DEC_LAYERS < 1:
            raise ValueError(f"MODEL.ONE_FORMER.DEC_LAYERS must be >= 1, got {of.DEC_LAYERS}")
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": of.HIDDEN_DIM,
            "num_queries": of.NUM_OBJECT_QUERIES,
            "nheads": of.NHEADS,
            "dropout": of.DROPOUT,
            "dim_feedforward": of.DIM_FEEDFORWARD,
            "enc_layers": of.ENC_LAYERS,
            "is_train": cfg.MODEL.IS_TRAIN,
            # DEC_LAYERS counts the prediction on the initial queries as one layer
            "dec_layers": of.DEC_LAYERS - 1,
            "class_dec_layers": of.CLASS_DEC_LAYERS,
            "pre_norm": of.PRE_NORM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "enforce_input_project": of.ENFORCE_INPUT_PROJ,
            "use_task_norm": of.USE_TASK_NORM,
        }

    def forward(self, x: List[torch.Tensor], mask_features: torch.Tensor, tasks: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> Dict:
        """
        Args:
            x: the three multi-scale features [(B, C, H/32, W/32), (B, C, H/16, W/16), (B, C, H/8, W/8)].
            mask_features: (B, mask_dim, H/4, W/4).
            tasks: (B, hidden_dim) task tokens (the task MLP's output).
            mask: unused (no padding masks), kept for the original's signature.
        Returns:
            {"pred_logits": (B, N, K+1), "pred_masks": (B, N, H/4, W/4), "aux_outputs": list of the 9 (for
            DEC_LAYERS 10) earlier predictions (empty in eval mode), "contrastive_logits": (B, N, C) or None}.
        """
        if len(x) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(x)}")
        src, pos, size_list = [], [], []
        for i in range(self.num_feature_levels):
            size_list.append(x[i].shape[-2:])
            pos.append(self.pe_layer(x[i], None).flatten(2).permute(2, 0, 1))  # (HW, B, C)
            src.append((self.input_proj[i](x[i]).flatten(2) + self.level_embed.weight[i][None, :, None])
                       .permute(2, 0, 1))
        bs = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)  # (N, B, C)

        tasks = tasks.unsqueeze(0)  # (1, B, C)
        if self.use_task_norm:
            tasks = self.decoder_norm(tasks)
        # src/pos order as in the original: memory (= value) is the positional encoding, the projected mask
        # features are added to the keys only.
        feats = self.pe_layer(mask_features, None)
        # without the task norm the original starts the class transformer from zero queries (the task token then
        # only enters as the last query)
        # channels-last, so that the (HW, B, C) view the class transformer takes has unit-stride channels: its two
        # layers then add and project it without a transposing copy each (20 of ~200 ms on CPU for Swin-L at 512²)
        keys = self.class_input_proj(mask_features).contiguous(memory_format=torch.channels_last)
        # feats, a sine encoding without mask, splits into row and column channels (separable_src)
        out_t, _ = self.class_transformer(feats, None, self.query_embed.weight[:-1], keys,
                                          tasks if self.use_task_norm else None, separable_src=True)
        out_t = out_t[0].permute(1, 0, 2)  # (N-1, B, C)
        out = torch.cat([out_t, tasks], dim=0)  # (N, B, C); the task token is the last query
        output = out.clone()

        predictions_class, predictions_mask = [], []
        want_aux = self.training
        # In eval only the last prediction is returned, so earlier layers need their masks only as attention masks
        # at the next level's (coarser) size: bilinear resizing is linear per channel, so resizing the mask features
        # first and then projecting gives the same logits as projecting at 1/4 scale and resizing (what training,
        # which needs every full mask for the losses, does).
        small_features = {} if not self.training else None

        def attn_features(level):  # keyed by level, not by size: sizes are symbolic under torch.compile
            if small_features is None:
                return None
            if level not in small_features:
                small_features[level] = F.interpolate(mask_features, size=size_list[level], mode="bilinear",
                                                      align_corners=False)
            return small_features[level]

        last = self.num_layers == 0
        outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(
            output, mask_features, size_list[0], need_class=want_aux or last, need_mask=want_aux or last,
            attn_features=attn_features(0),
        )
        predictions_class.append(outputs_class)
        predictions_mask.append(outputs_mask)
        for i in range(self.num_layers):
            level_index = i % self.num_feature_levels
            # a query whose mask covers nothing at this level attends everywhere instead of nowhere (tensor ops, not an
            # in-place masked assignment, so that the graph exports without a boolean Where)
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
            output = self.transformer_cross_attention_layers[i](
                output, src[level_index], memory_mask=attn_mask, pos=pos[level_index], query_pos=query_embed
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_embed)
            output = self.transformer_ffn_layers[i](output)
            last = i == self.num_layers - 1
            next_level = (i + 1) % self.num_feature_levels
            next_size = size_list[next_level]
            outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(
                output, mask_features, next_size, need_class=want_aux or last, need_mask=want_aux or last,
                need_attn_mask=not last, attn_features=None if last else attn_features(next_level),
            )
            predictions_class.append(outputs_class)
            predictions_mask.append(outputs_mask)

        return {
            "contrastive_logits": out.permute(1, 0, 2) if self.is_train else None,
            "pred_logits": predictions_class[-1],
            "pred_masks": predictions_mask[-1],
            "aux_outputs": [{"pred_logits": c, "pred_masks": m}
                            for c, m in zip(predictions_class[:-1], predictions_mask[:-1])] if want_aux else [],
        }

    def forward_prediction_heads(self, output, mask_features, attn_mask_target_size, need_class=True,
                                 need_mask=True, need_attn_mask=True, attn_features=None):
        """Predictions on the queries ``output`` (N, B, C).

        Returns class logits (B, N, K+1) (None unless need_class), mask logits (B, N, H/4, W/4) (None unless
        need_mask), and the next layer's attention mask (B, 1, N, h*w) bool, True where sigmoid(mask) < 0.5 at
        ``attn_mask_target_size`` (detached; None unless need_attn_mask). ``attn_features``: the mask features
        already resized to that size, to compute the attention mask without full-size masks.
        """
        decoder_output = self.decoder_norm(output).transpose(0, 1)  # (B, N, C)
        outputs_class = self.class_embed(decoder_output) if need_class else None
        mask_embed = self.mask_embed(decoder_output)
        # a model switched to oneDNN CPU linears (MODEL.CPU_LINEAR_BACKEND) takes them for the mask products too
        if isinstance(self.class_embed, OneDNNLinear):
            product = onednn_feature_product
        else:
            def product(embed, features):
                return torch.einsum("bqc,bchw->bqhw", embed, features)
        outputs_mask = product(mask_embed, mask_features) if need_mask else None
        attn_mask = None
        if need_attn_mask:
            if attn_features is not None:
                small = product(mask_embed.detach(), attn_features)
            else:
                full = outputs_mask if outputs_mask is not None else product(mask_embed, mask_features)
                small = F.interpolate(full.detach(), size=attn_mask_target_size, mode="bilinear",
                                      align_corners=False)
            # one mask for all heads: (B, 1, N, hw)
            attn_mask = (small.sigmoid().flatten(2) < 0.5).unsqueeze(1)
        return outputs_class, outputs_mask, attn_mask
