"""Semantic-segmentation test-time augmentation (multi-scale + horizontal flip), spec §7 "TTA".

``SemanticSegmentorWithTTA(cfg, model)`` wraps a OneFormer model in eval mode. For each input it builds the
augmented copies with Detectron2's ``DatasetMapperTTA`` (ResizeShortestEdge to every ``TEST.AUG.MIN_SIZES`` with
``TEST.AUG.MAX_SIZE``, each with and without a horizontal flip when ``TEST.AUG.FLIP``), runs the model on each, flips
the flipped ``sem_seg`` scores back and returns their average. The model already resizes ``sem_seg`` to the input's
original ``height`` x ``width``, so no other inverse transform is needed. While it runs, the wrapped model computes
only the semantic output (panoptic/instance inference is switched off and restored afterwards); its ``sem_seg``
values are the same as with them on.
"""
import contextlib
from typing import Dict, List

import torch
from detectron2.data.transforms import HFlipTransform
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA
from torch import nn

__all__ = ["SemanticSegmentorWithTTA"]


class SemanticSegmentorWithTTA(nn.Module):
    """Averages a semantic segmenter's ``sem_seg`` over multi-scale and flipped copies of each image."""

    def __init__(self, cfg, model: nn.Module, tta_mapper=None, batch_size: int = 1):
        """
        Args:
            cfg: config with ``TEST.AUG.{MIN_SIZES, MAX_SIZE, FLIP}``.
            model: the segmenter; called as ``model(list_of_dicts)``, returning dicts with "sem_seg" (K, H, W).
            tta_mapper: callable(dict) -> list of augmented dicts with "transforms"; default ``DatasetMapperTTA(cfg)``.
            batch_size: augmented copies per model call.
        """
        super().__init__()
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        self.cfg = cfg.clone()
        self.model = model
        self.tta_mapper = DatasetMapperTTA(cfg) if tta_mapper is None else tta_mapper
        self.batch_size = batch_size

    @contextlib.contextmanager
    def _semantic_only(self):
        flags = ("semantic_on", "panoptic_on", "instance_on", "detection_on")
        saved = {f: getattr(self.model, f) for f in flags if hasattr(self.model, f)}
        try:
            for f in saved:
                setattr(self.model, f, f == "semantic_on")
            yield
        finally:
            for f, v in saved.items():
                setattr(self.model, f, v)

    def _run(self, augmented: List[Dict]) -> List[torch.Tensor]:
        outputs = []
        with self._semantic_only():
            for i in range(0, len(augmented), self.batch_size):
                batch = augmented[i:i + self.batch_size]
                outputs.extend(o["sem_seg"] for o in self.model(batch))
        return outputs

    @staticmethod
    def _is_flipped(aug: Dict) -> bool:
        return any(isinstance(t, HFlipTransform) for t in aug["transforms"].transforms)

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        results = []
        for x in batched_inputs:
            augmented = self.tta_mapper(x)
            total = None
            for aug, sem_seg in zip(augmented, self._run(augmented)):
                if self._is_flipped(aug):
                    sem_seg = sem_seg.flip(dims=[-1])
                total = sem_seg if total is None else total + sem_seg
            results.append({"sem_seg": total / len(augmented)})
        return results
