"""OneFormer training losses (spec §5, §3 "Contrastive loss", §4.2 "Deep supervision").

``SetCriterion`` matches predictions to ground truth with a ``HungarianMatcher`` and computes

* ``loss_ce``           weighted cross-entropy over all queries, unmatched queries -> no-object class K;
* ``loss_mask``/``loss_dice``  point-sampled (PointRend importance sampling) BCE and dice on matched pairs;
* ``loss_contrastive``  symmetric image/text InfoNCE between the flattened pre-decoder queries and the text
                        embeddings of each image (final outputs only, gathered across processes).

Every auxiliary prediction (``outputs["aux_outputs"][i]``) is matched independently and gets ``loss_ce_{i}``,
``loss_mask_{i}`` and ``loss_dice_{i}``. The criterion returns unweighted losses; the meta-architecture multiplies
each by ``weight_dict[name]`` and drops names that are not in it (see ``build_weight_dict``).
"""

import math
from typing import Dict, Iterable, List, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from detectron2.utils import comm

from .point_sampling import calculate_uncertainty, get_uncertain_point_coords_with_randomness, point_sample

__all__ = ["SetCriterion", "build_weight_dict", "sigmoid_ce_loss", "dice_loss", "all_gather_with_grad"]


def sigmoid_ce_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """BCE-with-logits averaged over points (dim 1), summed over masks, divided by ``num_masks``.

    Args:
        inputs: (R, P) logits; targets: (R, P) float targets in [0, 1].
    """
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """``1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`` per mask (p = sigmoid(inputs)), summed / ``num_masks``.

    Args:
        inputs: (R, P) logits; targets: (R, P) float targets in [0, 1].
    """
    probs = inputs.sigmoid()
    numerator = 2.0 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    loss = 1.0 - (numerator + 1.0) / (denominator + 1.0)
    return loss.sum() / num_masks


class _AllGatherWithGrad(torch.autograd.Function):
    """``all_gather`` along dim 0 that is differentiable.

    Forward: every rank r contributes x_r (B, ...); the output on every rank is cat(x_0, ..., x_{W-1}) (W*B, ...).

    Backward: the training objective is the sum over ranks of the per-rank losses, sum_r L_r (DDP later averages the
    parameter gradients, i.e. optimizes the mean, exactly like every other loss term). x_k enters *every* rank's
    loss through that rank's gathered copy (slice k), so

        d(sum_r L_r)/dx_k (through the gather) = sum_r [dL_r / d gathered_r][slice k].

    Each rank holds only its own dL_r / d gathered_r (the incoming ``grad_output``), so we all-reduce(sum) it over
    the ranks and return this rank's slice. (Returning only the local slice without the reduction would drop the
    contributions of the other ranks' losses to x_k.) The direct use of x_k on its own rank (outside the gather) is
    handled by autograd as usual.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world_size = dist.get_world_size()
        rank = dist.get_rank()
        tensor = tensor.contiguous()
        gathered = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(gathered, tensor)
        ctx.rank = rank
        ctx.local_size = tensor.shape[0]
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.local_size
        return grad[start : start + ctx.local_size]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (same shape on every rank) over all processes along dim 0, keeping gradients.

    Returns the input unchanged when not running distributed.
    """
    if comm.get_world_size() == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor)


class SetCriterion(nn.Module):
    """Losses of OneFormer (Mask2Former-style set criterion plus the query-text contrastive loss).

    Args:
        num_classes: number of classes K (without no-object).
        matcher: module returning per-image (query indices, target indices) pairs.
        weight_dict: loss weights; stored for reference only (the model applies them).
        eos_coef: classification weight of the no-object class.
        losses: subset of ("labels", "masks", "contrastive").
        num_points: points per mask for the mask losses.
        oversample_ratio: PointRend oversampling ratio (candidates = num_points * oversample_ratio).
        importance_sample_ratio: fraction of the points taken as the most uncertain candidates.
        contrast_temperature: initial temperature of the contrastive loss; creates the learnable ``logit_scale``
            = ln(1 / temperature). ``None`` -> no ``logit_scale`` (and "contrastive" can't be requested).

    State dict: ``empty_weight`` (K+1 buffer: ones, last = eos_coef) and ``logit_scale`` (scalar Parameter).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_dict: Dict[str, float],
        eos_coef: float,
        losses: Iterable[str],
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        contrast_temperature: float = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = list(losses)
        unknown = set(self.losses) - {"labels", "masks", "contrastive"}
        assert not unknown, f"unknown losses {sorted(unknown)}"
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=True)

        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

        self.contrast_temperature = contrast_temperature
        if contrast_temperature is not None:
            self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1.0 / contrast_temperature))
        else:
            assert "contrastive" not in self.losses, "the contrastive loss needs contrast_temperature"

    # ------------------------------------------------------------------------------------------------------------
    # individual losses
    def loss_labels(self, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
        """Weighted cross-entropy over all N queries; unmatched queries target the no-object class K."""
        src_logits = outputs["pred_logits"].float()  # (B, N, K+1)
        batch_idx, src_idx = self._src_permutation_idx(indices)
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        target_classes = torch.full(src_logits.shape[:2], self.num_classes, dtype=torch.int64, device=src_logits.device)
        target_classes[batch_idx.to(src_logits.device), src_idx.to(src_logits.device)] = matched_labels.to(
            device=src_logits.device, dtype=torch.int64
        )
        loss_ce = F.cross_entropy(
            src_logits.transpose(1, 2), target_classes, weight=self.empty_weight.to(src_logits.dtype)
        )
        return {"loss_ce": loss_ce}

    def loss_masks(self, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
        """Point-sampled BCE and dice losses on the matched (prediction, target) mask pairs."""
        pred_masks = outputs["pred_masks"]  # (B, N, H, W)
        batch_idx, src_idx = self._src_permutation_idx(indices)
        if batch_idx.numel() == 0:
            # no ground truth in the batch: zero losses that stay connected to the graph
            zero = pred_masks.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        device = pred_masks.device
        src_masks = pred_masks[batch_idx.to(device), src_idx.to(device)].float()[:, None]  # (R, 1, H, W)
        target_masks = self._matched_target_masks(targets, indices, device)[:, None]  # (R, 1, Ht, Wt)

        with torch.no_grad():
            point_coords = get_uncertain_point_coords_with_randomness(
                src_masks,
                calculate_uncertainty,
                self.num_points,
                self.oversample_ratio,
                self.importance_sample_ratio,
            )  # (R, P, 2)
            point_labels = point_sample(target_masks, point_coords, align_corners=False).squeeze(1)  # (R, P)
        point_logits = point_sample(src_masks, point_coords, align_corners=False).squeeze(1)  # (R, P)

        return {
            "loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    def loss_contrastive(self, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
        """Symmetric InfoNCE between one image embedding (all N queries flattened) and one text embedding per image.

        Distributed: each rank scores its B images against the texts of all ranks (and its texts against all
        images); the positives are at columns ``arange(B) + B * rank``.
        """
        image_x = outputs["contrastive_logits"].float()
        text_x = outputs["texts"].float()
        batch_size = image_x.shape[0]
        image_x = F.normalize(image_x.flatten(1), dim=-1)  # (B, N*C)
        text_x = F.normalize(text_x.flatten(1), dim=-1)

        if comm.get_world_size() > 1:
            all_image = all_gather_with_grad(image_x)  # (W*B, N*C)
            all_text = all_gather_with_grad(text_x)
            offset = batch_size * comm.get_rank()
        else:
            all_image, all_text, offset = image_x, text_x, 0
        logits_per_img = image_x @ all_text.t()  # (B, W*B)
        logits_per_text = text_x @ all_image.t()
        labels = torch.arange(batch_size, dtype=torch.int64, device=image_x.device) + offset

        logit_scale = torch.clamp(self.logit_scale.exp(), max=100)
        loss_img = F.cross_entropy(logit_scale * logits_per_img, labels)
        loss_text = F.cross_entropy(logit_scale * logits_per_text, labels)
        return {"loss_contrastive": loss_img + loss_text}

    def get_loss(self, loss, outputs, targets, indices, num_masks) -> Dict[str, torch.Tensor]:
        loss_map = {"labels": self.loss_labels, "masks": self.loss_masks, "contrastive": self.loss_contrastive}
        assert loss in loss_map, f"do you really want to compute {loss} loss?"
        return loss_map[loss](outputs, targets, indices, num_masks)

    # ------------------------------------------------------------------------------------------------------------
    def forward(self, outputs: Dict, targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """
        Args:
            outputs: "pred_logits" (B, N, K+1), "pred_masks" (B, N, H, W), optionally "aux_outputs" (list of dicts
                with pred_logits / pred_masks), and for the contrastive loss "contrastive_logits" (B, N, C) and
                "texts" (B, N, C).
            targets: B dicts with "labels" (M,) int64 and "masks" (M, Ht, Wt) (padded image size).

        Returns:
            Unweighted losses: loss_ce, loss_mask, loss_dice, loss_contrastive and loss_{ce,mask,dice}_{i} per aux
            output i (only those of the requested loss groups).
        """
        outputs_without_aux = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        indices = self.matcher(outputs_without_aux, targets)
        num_masks = self._num_masks(targets, outputs["pred_logits"].device)

        losses = {}
        for loss in self.losses:
            losses.update(self.get_loss(loss, outputs, targets, indices, num_masks))

        for i, aux_outputs in enumerate(outputs.get("aux_outputs") or []):
            aux_indices = self.matcher(aux_outputs, targets)
            for loss in self.losses:
                if loss == "contrastive":  # only on the final (pre-decoder) queries
                    continue
                l_dict = self.get_loss(loss, aux_outputs, targets, aux_indices, num_masks)
                losses.update({f"{k}_{i}": v for k, v in l_dict.items()})
        return losses

    # ------------------------------------------------------------------------------------------------------------
    # helpers
    @staticmethod
    def _src_permutation_idx(indices) -> Tuple[torch.Tensor, torch.Tensor]:
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        return batch_idx.long(), src_idx.long()

    @staticmethod
    def _matched_target_masks(targets, indices, device) -> torch.Tensor:
        """(R, Ht, Wt) float target masks of the matched pairs, zero-padded to the largest target size in the batch
        (the model normally gives all targets the padded batch size already)."""
        height = max(t["masks"].shape[-2] for t in targets)
        width = max(t["masks"].shape[-1] for t in targets)
        chunks = []
        for t, (_, j) in zip(targets, indices):
            if j.numel() == 0:
                continue
            masks = t["masks"][j.to(t["masks"].device)].to(device=device, dtype=torch.float32)
            pad_h, pad_w = height - masks.shape[-2], width - masks.shape[-1]
            if pad_h or pad_w:
                masks = F.pad(masks, (0, pad_w, 0, pad_h))
            chunks.append(masks)
        return torch.cat(chunks, dim=0)

    @staticmethod
    def _num_masks(targets, device) -> float:
        """Average number of target masks per process (all-reduced), at least 1."""
        num_masks = sum(int(t["labels"].shape[0]) for t in targets)
        num_masks = torch.as_tensor([num_masks], dtype=torch.float, device=device)
        world_size = comm.get_world_size()
        if world_size > 1:
            dist.all_reduce(num_masks)
        return torch.clamp(num_masks / world_size, min=1).item()

    def __repr__(self) -> str:
        head = "Criterion " + self.__class__.__name__
        body = [
            f"matcher: {self.matcher!r}",
            f"losses: {self.losses}",
            f"weight_dict: {self.weight_dict}",
            f"num_classes: {self.num_classes}",
            f"eos_coef: {self.eos_coef}",
            f"num_points: {self.num_points}",
            f"oversample_ratio: {self.oversample_ratio}",
            f"importance_sample_ratio: {self.importance_sample_ratio}",
            f"contrast_temperature: {self.contrast_temperature}",
        ]
        return "\n".join([head] + ["    " + line for line in body])


def build_weight_dict(
    class_weight: float,
    mask_weight: float,
    dice_weight: float,
    contrastive_weight: float,
    dec_layers: int,
    deep_supervision: bool,
) -> Dict[str, float]:
    """Loss weights keyed by loss name.

    ``dec_layers`` is MODEL.ONE_FORMER.DEC_LAYERS (10): the decoder makes dec_layers - 1 auxiliary predictions, so
    with deep supervision the keys loss_{ce,mask,dice,contrastive}_{i} for i < dec_layers - 1 are added (the
    contrastive aux keys are listed like in the original release even though no such loss is ever produced).
    """
    weight_dict = {
        "loss_ce": class_weight,
        "loss_mask": mask_weight,
        "loss_dice": dice_weight,
        "loss_contrastive": contrastive_weight,
    }
    if deep_supervision:
        aux_weight_dict = {}
        for i in range(dec_layers - 1):
            aux_weight_dict.update({f"{k}_{i}": v for k, v in weight_dict.items()})
        weight_dict.update(aux_weight_dict)
    return weight_dict
