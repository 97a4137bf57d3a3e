"""The inference graph that is exported: ``OneFormerExportModule`` and its tensor-only post-processing.

Everything here runs under ``torch.jit.trace`` (the TorchScript file and the TorchScript-based ONNX exporter): no
strings, no host reads, no data-dependent Python control flow, sizes only through tensor shapes. Called eagerly it
gives the same numbers as :class:`oneformer.OneFormer` (tests/export check both).

Graph contract (see README "Export"):

inputs
    ``image``     uint8 (B, 3, H, W), channels in the model's INPUT.FORMAT (RGB for the shipped configs), any H, W:
                  normalized with PIXEL_MEAN/STD, then zero-padded at the bottom/right to multiples of
                  size_divisibility (32), as ``ImageList.from_tensors`` does for equal-size images.
    ``task_ids``  int64 (B, T) CLIP token ids of "The task is <task>" (T = INPUT.TASK_SEQ_LEN = 77); only with
                  task "input" (otherwise the ids of the exported task are a constant of the graph).
outputs (always)
    ``pred_logits``  float32 (B, N, K + 1) class logits, the last one "no object".
    ``pred_masks``   float32 (B, N, Hp / 4, Wp / 4) mask logits of the padded image (Hp, Wp = H, W rounded up to
                     multiples of size_divisibility).
postprocess "semantic" adds
    ``sem_seg``          float32 (B, K, H, W) per-pixel class scores (MODEL.TEST semantic rule), at the input size.
    ``sem_seg_classes``  int64 (B, H, W) their argmax.
postprocess "panoptic" adds (the panoptic rule with MODEL.TEST.OBJECT_MASK_THRESHOLD / OVERLAP_THRESHOLD)
    ``panoptic_seg``       int32 (B, H, W): 0 = void, else a segment id 1..S.
    ``segments_category``  int64 (B, N): entry s is the contiguous category id of segment s + 1 (-1 for s >= S).
    ``segments_isthing``   bool (B, N): entry s tells whether segment s + 1 is a thing (False for s >= S).
    ``num_segments``       int64 (B,): S.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "POSTPROCESS",
    "TASK_MODES",
    "OneFormerExportModule",
    "PaddedOneFormerExportModule",
    "output_names",
    "semantic_postprocess",
    "panoptic_postprocess",
]

POSTPROCESS = ("none", "semantic", "panoptic")
TASK_MODES = ("semantic", "instance", "panoptic", "input")

_OUTPUTS = {
    "none": ("pred_logits", "pred_masks"),
    "semantic": ("pred_logits", "pred_masks", "sem_seg", "sem_seg_classes"),
    "panoptic": ("pred_logits", "pred_masks", "panoptic_seg", "segments_category", "segments_isthing",
                 "num_segments"),
}


def output_names(postprocess: str) -> Tuple[str, ...]:
    """Names of the graph outputs, in order, for a post-processing mode."""
    if postprocess not in _OUTPUTS:
        raise ValueError(f"postprocess must be one of {POSTPROCESS}, got {postprocess!r}")
    return _OUTPUTS[postprocess]


def _resize_to_input(pred_masks: torch.Tensor, padded_size, image_size) -> torch.Tensor:
    """(B, N, h, w) mask logits -> (B, N, H, W): bilinear to the padded size, then cropped to the image (the eager
    model's ``resize`` for an output of the input size; its same-size resize after the crop is the identity)."""
    masks = F.interpolate(pred_masks, size=padded_size, mode="bilinear", align_corners=False)
    return masks[:, :, : image_size[0], : image_size[1]]


def semantic_postprocess(pred_logits: torch.Tensor, mask_logits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Batched ``semantic_inference``: (B, N, K+1) logits and (B, N, H, W) mask logits -> (B, K, H, W) scores and
    their (B, H, W) int64 argmax."""
    probs = F.softmax(pred_logits, dim=-1)[..., :-1]
    scores = torch.einsum("bqc,bqhw->bchw", probs, mask_logits.sigmoid())
    return scores, scores.argmax(1)


def panoptic_postprocess(
    pred_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    is_thing: torch.Tensor,
    object_mask_threshold: float,
    overlap_threshold: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``panoptic_inference`` for a batch, as tensor operations (no loop over queries, fixed-size outputs).

    Same rule as :func:`oneformer.modeling.inference.panoptic_inference`: the kept queries (best class not
    no-object, probability above ``object_mask_threshold``) compete per pixel by probability × sigmoid(mask) (first
    query on ties); a query makes a segment when it owns pixels, its own mask (≥ 0.5) is not empty, it keeps some of
    its own foreground, and owned area / own-foreground area is not below ``overlap_threshold`` (computed in float64,
    as Python does); segments of one stuff class merge into the first one; ids count segments in query order.

    Args:
        pred_logits: (B, N, K+1); mask_logits: (B, N, H, W) at the output resolution.
        is_thing: (K+1,) bool, True for thing classes (False for no-object).
    Returns:
        panoptic_seg (B, H, W) int32, segments_category (B, N) int64 (-1 padded), segments_isthing (B, N) bool,
        num_segments (B,) int64.
    """
    N = pred_logits.shape[1]
    num_classes = pred_logits.shape[-1] - 1
    scores, labels = F.softmax(pred_logits, dim=-1).max(-1)  # (B, N)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    masks = mask_logits.sigmoid()  # (B, N, H, W)
    weighted = torch.where(keep[:, :, None, None], scores[:, :, None, None] * masks, torch.full_like(masks, -1.0))
    owner = weighted.argmax(1)  # (B, H, W)
    own_fg = masks.gather(1, owner[:, None]).squeeze(1) >= 0.5  # (B, H, W)

    queries = torch.arange(N, device=owner.device)
    # pixel counts per query: owned, own foreground (float sums: exact below 2^24 pixels), owned and foreground
    flat_owner = owner.flatten(1)
    zeros = torch.zeros_like(labels)
    mask_area = zeros.scatter_add(1, flat_owner, torch.ones_like(flat_owner))
    original_area = (masks >= 0.5).to(masks.dtype).flatten(2).sum(-1).to(torch.int64)
    final_area = zeros.scatter_add(1, flat_owner, own_fg.flatten(1).to(torch.int64))
    ratio = mask_area.to(torch.float64) / original_area.clamp(min=1).to(torch.float64)
    valid = keep & (mask_area > 0) & (original_area > 0) & (final_area > 0) & (ratio >= overlap_threshold)

    thing = is_thing.to(owner.device)[labels]  # (B, N)
    # candidate[b, k, j]: query j (<= k, valid, same class) can give its segment to query k; things only to themselves
    eye = queries[:, None] == queries[None, :]
    earlier = queries[None, :] <= queries[:, None]
    candidate = (valid[:, None, :] & (labels[:, :, None] == labels[:, None, :]) & earlier[None]
                 & (eye[None] | ~thing[:, :, None]))
    first = candidate.to(torch.int32).argmax(-1)  # (B, N): the first such j (k itself for a new segment)
    new = valid & (first == queries[None])
    new_id = new.to(torch.int64).cumsum(1)  # segment id of each new segment
    segment_of = torch.where(valid, new_id.gather(1, first), torch.zeros_like(new_id))  # (B, N)

    panoptic = segment_of.gather(1, owner.flatten(1)).view(owner.shape)
    panoptic = torch.where(own_fg, panoptic, torch.zeros_like(panoptic)).to(torch.int32)

    # tables by segment id: slot s holds segment s + 1
    slot = new[:, None, :] & (new_id[:, None, :] == (queries + 1)[None, :, None])  # (B, slot, query)
    filled = slot.any(-1)
    category = torch.where(filled, (slot.to(torch.int64) * labels[:, None, :]).sum(-1), torch.full_like(new_id, -1))
    isthing = filled & (slot & thing[:, None, :]).any(-1)
    return panoptic, category, isthing, new.to(torch.int64).sum(1)


class OneFormerExportModule(nn.Module):
    """Wraps an eval-mode :class:`oneformer.OneFormer` as a traceable graph with tensor inputs and outputs.

    Args:
        model: the OneFormer model (its parameters are shared, not copied).
        task: "semantic" / "instance" / "panoptic" (token ids baked in as a constant) or "input" (ids are the second
            input of ``forward``).
        postprocess: "none", "semantic" or "panoptic" (see the module docstring).
        thing_ids: contiguous thing class ids, needed for "panoptic".
    ``forward(image, task_ids=None)`` returns the tuple of outputs named by ``output_names(postprocess)``.
    """

    def __init__(self, model: nn.Module, task: str = "panoptic", postprocess: str = "none",
                 thing_ids: Optional[Sequence[int]] = None):
        super().__init__()
        if task not in TASK_MODES:
            raise ValueError(f"task must be one of {TASK_MODES}, got {task!r}")
        self.names = output_names(postprocess)
        self.model = model
        self.task = task
        self.postprocess = postprocess
        self.size_divisibility = int(model.size_divisibility)
        self.object_mask_threshold = float(model.object_mask_threshold)
        self.overlap_threshold = float(model.overlap_threshold)
        if task != "input":
            self.register_buffer("task_ids", model.task_token_ids(task).clone().view(1, -1), persistent=False)
        else:
            self.task_ids = None
        num_classes = model.sem_seg_head.num_classes
        is_thing = torch.zeros(num_classes + 1, dtype=torch.bool)
        if postprocess == "panoptic":
            rule = getattr(model, "panoptic_rule", "original")
            if rule != "original":
                raise ValueError(f"in-graph panoptic post-processing implements the original rule only, but the "
                                 f"model has MODEL.TEST.PANOPTIC_RULE {rule!r}: export with postprocess 'none' "
                                 "(the runtime then applies the model's rule) or set the rule to 'original'")
            if thing_ids is None:
                raise ValueError("panoptic post-processing needs the thing class ids (dataset metadata)")
            is_thing[torch.as_tensor(list(thing_ids), dtype=torch.long)] = True
        self.register_buffer("is_thing", is_thing, persistent=False)

    @property
    def input_names(self) -> List[str]:
        return ["image"] + (["task_ids"] if self.task == "input" else [])

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> normalized float, zero-padded to multiples of size_divisibility."""
        m = self.model
        x = (image.to(m.pixel_mean.dtype) - m.pixel_mean) / m.pixel_std
        d = self.size_divisibility
        if d > 1:
            H, W = x.shape[-2:]
            x = F.pad(x, (0, (d - W % d) % d, 0, (d - H % d) % d), value=0.0)
        return x

    def forward(self, image: torch.Tensor, task_ids: Optional[torch.Tensor] = None):
        m = self.model
        B = image.shape[0]
        image_size = image.shape[-2:]
        x = self.preprocess(image)
        padded_size = x.shape[-2:]
        if self.task_ids is not None:
            ids = self.task_ids.expand(B, -1)
        elif task_ids is None:
            raise ValueError("this graph takes the task as input: pass task_ids (B, TASK_SEQ_LEN) int64")
        else:
            ids = task_ids
        tasks = m.task_mlp(ids.to(m.task_mlp.layers[0].weight.dtype))
        outputs = m.sem_seg_head(m.backbone(x), tasks)
        pred_logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        result = [pred_logits, pred_masks]
        if self.postprocess != "none":
            masks = _resize_to_input(pred_masks, padded_size, image_size)
            if self.postprocess == "semantic":
                result.extend(semantic_postprocess(pred_logits, masks))
            else:
                result.extend(panoptic_postprocess(pred_logits, masks, self.is_thing, self.object_mask_threshold,
                                                   self.overlap_threshold))
        return tuple(result)

    def named_outputs(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        """``forward`` as a dict name -> tensor (eager convenience)."""
        return dict(zip(self.names, self.forward(*args, **kwargs)))


class PaddedOneFormerExportModule(OneFormerExportModule):
    """The graph of the torch.export-based formats (pt2, aoti, onnx): images padded by the caller.

    ``forward(image, image_sizes, task_ids=None)``: ``image`` uint8 (B, 3, Hp, Wp) with Hp, Wp multiples of 32 (the
    backbone's stride, so that torch.export can keep them symbolic: ``Hp = 32 * h``), each image at the top left and
    anything in the padding; ``image_sizes`` int64 (B, 2), the (H, W) of each image. The padding is set to zero after
    normalization, as ``ImageList.from_tensors`` pads, so the outputs equal the eager model's on the unpadded images
    (which may differ in size within a batch). Outputs: ``pred_logits`` (B, N, K + 1) and ``pred_masks``
    (B, N, Hp / 4, Wp / 4) (post-processing "none" only; the runtime applies the eager post-processing).
    """

    def __init__(self, model: nn.Module, task: str = "panoptic"):
        super().__init__(model, task=task, postprocess="none")

    @property
    def input_names(self) -> List[str]:
        return ["image", "image_sizes"] + (["task_ids"] if self.task == "input" else [])

    def forward(self, image: torch.Tensor, image_sizes: torch.Tensor, task_ids: Optional[torch.Tensor] = None):
        m = self.model
        x = (image.to(m.pixel_mean.dtype) - m.pixel_mean) / m.pixel_std
        H, W = x.shape[-2:]
        rows = torch.arange(H, device=x.device)[None, :] < image_sizes[:, :1]  # (B, Hp)
        cols = torch.arange(W, device=x.device)[None, :] < image_sizes[:, 1:]  # (B, Wp)
        x = torch.where(rows[:, None, :, None] & cols[:, None, None, :], x, torch.zeros_like(x))
        ids = self.task_ids.expand(image.shape[0], -1) if self.task_ids is not None else task_ids
        tasks = m.task_mlp(ids.to(m.task_mlp.layers[0].weight.dtype))
        outputs = m.sem_seg_head(m.backbone(x), tasks)
        return outputs["pred_logits"], outputs["pred_masks"]
