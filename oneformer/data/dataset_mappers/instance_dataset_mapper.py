"""Training mapper for instance-only data ("oneformer_instance").

For datasets with COCO-style instance annotations and no panoptic PNGs (``register_instance_dataset``,
``register_coco_instances``, Detectron2's ``load_coco_json``): records with ``file_name`` and ``annotations``, each
with a contiguous ``category_id`` (index into ``metadata.thing_classes``), ``segmentation`` (polygons, RLE dict —
compressed or not — or an (H, W) array) and optional ``iscrowd``. The task is always "instance".

Augmentation: as "oneformer_unified" except that the crop is a plain RandomCrop(CROP.TYPE, CROP.SIZE) (there is no
class map for the category-area constraint); fixed-size padding to INPUT.SIZE_DIVISIBILITY (image 128, masks 0).
Every annotation is rasterized at the original size (polygons with pycocotools) and transformed as a segmentation
(nearest), so cropping needs no polygon clipping (Detectron2's polygon crop requires shapely).
Ground truth: one mask per non-crowd annotation, in annotation order, skipping masks that end up empty; boxes from the
masks. Text list: "a photo with a {thing name}" per instance in class order, padded with "an instance photo".
Output as "oneformer_unified" without "sem_seg"; "thing_ids" = all class ids (every class is a thing).
``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` must equal ``len(thing_classes)``.
"""
import copy

import numpy as np
import pycocotools.mask as mask_util
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures.masks import polygons_to_bitmask

from . import register_dataset_mapper
from .oneformer_unified_dataset_mapper import (
    IMAGE_PAD_VALUE,
    TrainingMapperBase,
    build_unified_augmentations,
    masks_to_boxes,
    pad_to_size,
    training_mapper_kwargs,
)

__all__ = ["OneFormerInstanceDatasetMapper", "annotation_to_mask"]


def annotation_to_mask(obj, transforms, orig_shape, source: str = "") -> np.ndarray:
    """The bool mask of one COCO-style annotation (image of size ``orig_shape``) after ``transforms``."""
    seg = obj.get("segmentation")
    where = f"{source}: " if source else ""
    if seg is None:
        raise ValueError(f"{where}an annotation has no 'segmentation'; OneFormer trains on masks, not boxes")
    if isinstance(seg, list):  # polygons, in pixel coordinates of the original image
        polys = [np.asarray(p, dtype=np.float64).reshape(-1) for p in seg if len(p) >= 6]
        mask = polygons_to_bitmask(polys, *orig_shape) if polys else np.zeros(orig_shape, dtype=bool)
    elif isinstance(seg, dict):  # RLE
        rle = mask_util.frPyObjects(seg, *seg["size"]) if isinstance(seg.get("counts"), list) else seg
        mask = mask_util.decode(rle)
    elif isinstance(seg, np.ndarray):
        mask = seg
    else:
        raise ValueError(f"{where}unsupported segmentation of type {type(seg).__name__} (polygons, RLE or array)")
    if mask.shape[:2] != tuple(orig_shape):
        raise ValueError(f"{where}mask of size {mask.shape[:2]} does not match the image size {tuple(orig_shape)}")
    return transforms.apply_segmentation(mask.astype(np.uint8)).astype(bool)


@register_dataset_mapper("oneformer_instance")
class OneFormerInstanceDatasetMapper(TrainingMapperBase):
    """Instance-only training data → OneFormer inputs with task "instance" (see module docstring)."""

    @configurable
    def __init__(self, is_train: bool = True, **kwargs):
        """Args: as ``TrainingMapperBase`` (class_names = thing_classes); the task probabilities are not used."""
        super().__init__(is_train, **kwargs)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = training_mapper_kwargs(cfg, is_train, "oneformer_instance", class_names_key="thing_classes")
        ret["thing_ids"] = list(range(len(ret["class_names"])))
        ret["augmentations"] = build_unified_augmentations(cfg, ret["ignore_label"], category_area_crop=False)
        return ret

    def _sample_task(self) -> str:
        return "instance"

    def __call__(self, dataset_dict):
        record = dataset_dict.get("file_name", "<record without file_name>")
        if "annotations" not in dataset_dict:
            raise ValueError(f"Dataset record {record} has no 'annotations': the 'oneformer_instance' mapper trains "
                             "from COCO-style instance annotations.")
        for obj in dataset_dict["annotations"]:
            cid = obj.get("category_id")
            if isinstance(cid, bool) or not isinstance(cid, (int, np.integer)) or not 0 <= cid < self.num_classes:
                raise ValueError(f"{record}: annotation category_id {cid!r} is not a contiguous thing id in "
                                 f"0..{self.num_classes - 1} (metadata.thing_classes has {self.num_classes} names)")
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read(dataset_dict["file_name"], self.image_format, "Image", record)
        utils.check_image_size(dataset_dict, image)
        orig_shape = image.shape[:2]

        aug_input = T.AugInput(image)
        transforms = self._augment(self.augmentations, aug_input, record)
        image = aug_input.image
        new_shape = image.shape[:2]
        classes, masks = [], []
        for obj in dataset_dict.pop("annotations"):
            if obj.get("iscrowd", 0):
                continue
            mask = annotation_to_mask(obj, transforms, orig_shape, record)
            if mask.any():
                classes.append(int(obj["category_id"]))
                masks.append(mask)
        masks = np.stack(masks) if masks else np.zeros((0,) + tuple(new_shape), dtype=bool)

        pad = self._pad_size(image.shape)
        if pad is not None:
            image = pad_to_size(image, pad, IMAGE_PAD_VALUE)
            masks = pad_to_size(masks.transpose(1, 2, 0), pad, False).transpose(2, 0, 1)
        classes = np.asarray(classes, dtype=np.int64)
        return self._pack(dataset_dict, image, self._sample_task(), classes, masks, masks_to_boxes(masks))
