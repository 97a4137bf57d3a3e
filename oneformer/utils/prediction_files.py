"""Predictions as standard files: COCO panoptic PNG + JSON, semantic label PNG, COCO instance results with RLE masks.

Category ids in the files are the dataset's own ids (mapped back from the model's contiguous ids through the
metadata's ``thing/stuff_dataset_id_to_contiguous_id``), so the files can be scored by panopticapi / pycocotools
against the dataset's annotations.
"""
import json
import os
from typing import Dict, List

import numpy as np
import torch
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import BitMasks
from panopticapi.utils import id2rgb
from PIL import Image

__all__ = ["contiguous_to_dataset_ids", "panoptic_to_coco", "write_semantic_png", "instances_to_coco_results",
           "write_json"]


def contiguous_to_dataset_ids(metadata) -> Dict[int, int]:
    """Contiguous class id → dataset category id (identity where the metadata has no mapping)."""
    mapping = {}
    for key in ("stuff_dataset_id_to_contiguous_id", "thing_dataset_id_to_contiguous_id"):
        for dataset_id, contiguous in getattr(metadata, key, {}).items():
            mapping[int(contiguous)] = int(dataset_id)
    return mapping


def panoptic_to_coco(panoptic_seg: torch.Tensor, segments_info: List[Dict], png_path: str, image_id,
                     id_map: Dict[int, int]) -> Dict:
    """Write the RGB-encoded panoptic PNG and return its COCO panoptic annotation entry.

    Args:
        panoptic_seg: (H, W) segment ids (0 = void); segments_info: Detectron2's list of {"id", "category_id",
            "isthing"}; png_path: where to write the PNG; id_map: contiguous → dataset category ids.
    Returns:
        {"image_id", "file_name", "segments_info": [{"id", "category_id", "iscrowd", "area", "bbox", "isthing"}]}.
    """
    ids = panoptic_seg.cpu().numpy().astype(np.uint32)
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    Image.fromarray(id2rgb(ids)).save(png_path)
    segments = []
    for s in segments_info:
        mask = ids == s["id"]
        area = int(mask.sum())
        if area == 0:
            continue
        ys, xs = np.nonzero(mask)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        cat = int(s["category_id"])
        segments.append({"id": int(s["id"]), "category_id": id_map.get(cat, cat), "iscrowd": 0, "area": area,
                         "bbox": bbox, "isthing": bool(s.get("isthing", False))})
    return {"image_id": image_id, "file_name": os.path.basename(png_path), "segments_info": segments}


def write_semantic_png(sem_seg: torch.Tensor, path: str, ignore_label: int = 255) -> np.ndarray:
    """Write the per-pixel argmax of (K, H, W) class scores as a label PNG (uint8, or uint16 beyond 255 classes)."""
    labels = sem_seg.argmax(0).cpu().numpy()
    dtype = np.uint8 if sem_seg.shape[0] <= 255 and ignore_label <= 255 else np.uint16
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(labels.astype(dtype)).save(path)
    return labels


def instances_to_coco_results(instances, image_id, id_map: Dict[int, int]) -> List[Dict]:
    """COCO detection results (RLE masks, XYWH boxes from the masks, scores, dataset category ids)."""
    instances = instances.to("cpu")
    if len(instances) and instances.has("pred_masks"):
        instances.pred_boxes = BitMasks(instances.pred_masks > 0.5).get_bounding_boxes()
    results = instances_to_coco_json(instances, image_id)
    for r in results:
        r["category_id"] = id_map.get(r["category_id"], r["category_id"])
    return results


def write_json(obj, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)
