"""The DETR-style encoder-decoder Transformer used as OneFormer's ``class_transformer``.

OneFormer builds it with 0 encoder layers and 2 post-norm decoder layers, and uses it to turn the task token into
N−1 object queries (see ``ContrastiveMultiScaleMaskedTransformerDecoder``). Parameter names follow the original
(``decoder.layers.{i}.{self_attn,multihead_attn,linear1,linear2,norm1,norm2,norm3}``, ``decoder.norm``).
"""
import copy
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ...ops.separable_attention import separable_kernel_applies
from .attention import multi_head_attention, separable_value_attention

__all__ = ["Transformer", "TransformerEncoderLayer", "TransformerDecoderLayer"]


def _with_pos(x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    return x if pos is None else x + pos


def _activation(name: str):
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu
    if name == "glu":
        return F.glu
    raise ValueError(f"activation must be relu, gelu or glu, got {name!r}")


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


class TransformerEncoderLayer(nn.Module):
    """Self-attention + FFN over (S, B, C) memory, post- or pre-norm."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu", normalize_before=False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.normalize_before = normalize_before

    def forward(self, src, src_mask=None, pos=None):
        """src, pos: (S, B, C); src_mask: optional bool (S, S), True = blocked. Returns (S, B, C)."""
        x = self.norm1(src) if self.normalize_before else src
        q = k = _with_pos(x, pos)
        src = src + self.dropout1(multi_head_attention(self.self_attn, q, k, x, src_mask))
        if not self.normalize_before:
            src = self.norm1(src)
        x = self.norm2(src) if self.normalize_before else src
        src = src + self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))
        if not self.normalize_before:
            src = self.norm2(src)
        return src


class TransformerDecoderLayer(nn.Module):
    """Self-attention over queries, cross-attention to memory, FFN; post- or pre-norm. Tensors are (L, B, C)."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu", normalize_before=False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.normalize_before = normalize_before

    def forward(self, tgt, memory, memory_mask=None, pos=None, query_pos=None, memory_factors=None):
        """tgt, query_pos: (N, B, C); memory, pos: (S, B, C); memory_mask: optional bool, True = blocked.
        memory_factors: optional (rows (H, C/2), cols (W, C/2)) when memory is an H x W map whose first C/2
        channels are ``rows`` along each column and the last C/2 are ``cols`` along each row (for every image):
        float32 CPU inference then attends through the separable-value kernel."""
        x = self.norm1(tgt) if self.normalize_before else tgt
        q = k = _with_pos(x, query_pos)
        tgt = tgt + self.dropout1(multi_head_attention(self.self_attn, q, k, x))
        if not self.normalize_before:
            tgt = self.norm1(tgt)
        x = self.norm2(tgt) if self.normalize_before else tgt
        if (memory_factors is not None and memory_mask is None and self.multihead_attn.in_proj_weight is not None
                and separable_kernel_applies(x, self.training)):
            attended = separable_value_attention(self.multihead_attn, _with_pos(x, query_pos),
                                                 _with_pos(memory, pos), *memory_factors)
        else:
            attended = multi_head_attention(
                self.multihead_attn, _with_pos(x, query_pos), _with_pos(memory, pos), memory, memory_mask
            )
        tgt = tgt + self.dropout2(attended)
        if not self.normalize_before:
            tgt = self.norm2(tgt)
        x = self.norm3(tgt) if self.normalize_before else tgt
        tgt = tgt + self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))
        if not self.normalize_before:
            tgt = self.norm3(tgt)
        return tgt


class TransformerEncoder(nn.Module):
    def __init__(self, encoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.norm = norm

    def forward(self, src, mask=None, pos=None):
        for layer in self.layers:
            src = layer(src, src_mask=mask, pos=pos)
        return src if self.norm is None else self.norm(src)


class TransformerDecoder(nn.Module):
    def __init__(self, decoder_layer, num_layers, norm=None, return_intermediate=False):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.norm = norm
        self.return_intermediate = return_intermediate

    def forward(self, tgt, memory, memory_mask=None, pos=None, query_pos=None, memory_factors=None):
        """Returns (num_outputs, N, B, C): every layer's output if return_intermediate, else the last one.
        ``memory_factors``: see :meth:`TransformerDecoderLayer.forward`."""
        intermediate = []
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_mask=memory_mask, pos=pos, query_pos=query_pos,
                        memory_factors=memory_factors)
            if self.return_intermediate:
                intermediate.append(tgt if self.norm is None else self.norm(tgt))
        if self.return_intermediate:
            return torch.stack(intermediate)
        return (tgt if self.norm is None else self.norm(tgt)).unsqueeze(0)


class Transformer(nn.Module):
    """Encoder-decoder transformer over a feature map.

    Args:
        d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout, activation,
        normalize_before (pre-norm), return_intermediate_dec: as in DETR.
    """

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
                 dropout=0.1, activation="relu", normalize_before=False, return_intermediate_dec=False):
        super().__init__()
        enc_layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation, normalize_before)
        self.encoder = TransformerEncoder(
            enc_layer, num_encoder_layers, nn.LayerNorm(d_model) if normalize_before else None
        )
        dec_layer = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation, normalize_before)
        self.decoder = TransformerDecoder(
            dec_layer, num_decoder_layers, nn.LayerNorm(d_model), return_intermediate=return_intermediate_dec
        )
        self.d_model = d_model
        self.nhead = nhead
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, mask, query_embed, pos_embed, task_token=None, separable_src=False):
        """
        Args:
            src: (B, C, H, W) memory map; pos_embed: (B, C, H, W) added to the keys.
            mask: optional (B, H, W) bool padding mask (True = padding), or None.
            query_embed: (Nq, C) query positions.
            task_token: optional (1, B, C); the decoder input is this token repeated Nq times (zeros if None).
            separable_src: the caller guarantees that src's first C/2 channels vary along H only and the last C/2
                along W only, the same for every image (OneFormer's sine positional encoding without a mask); with
                no encoder layers, the decoder's cross-attention may then use the separable-value kernel.
        Returns:
            hs: (num_outputs, B, Nq, C) decoder outputs; memory: (B, C, H, W).
        """
        bs, c, h, w = src.shape
        factors = None
        if separable_src and mask is None and len(self.encoder.layers) == 0 and self.encoder.norm is None:
            factors = (src[0, : c // 2, :, 0].t(), src[0, c // 2 :, 0, :].t())  # (H, C/2), (W, C/2)
        src = src.flatten(2).permute(2, 0, 1)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
        query_embed = query_embed.unsqueeze(1).repeat(1, bs, 1)
        memory_mask = None
        if mask is not None:
            # padding mask over keys, for every query: (B, 1, 1, S) broadcasts in attention
            memory_mask = mask.flatten(1)[:, None, None, :]
        tgt = torch.zeros_like(query_embed) if task_token is None else task_token.repeat(query_embed.shape[0], 1, 1)
        memory = self.encoder(src, mask=None if mask is None else memory_mask.expand(-1, 1, src.shape[0], -1),
                              pos=pos_embed)
        hs = self.decoder(tgt, memory, memory_mask=memory_mask, pos=pos_embed, query_pos=query_embed,
                          memory_factors=factors)
        return hs.transpose(1, 2), memory.permute(1, 2, 0).view(bs, c, h, w)
