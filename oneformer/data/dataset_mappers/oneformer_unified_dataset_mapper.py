"""OneFormer's unified training mapper ("oneformer_unified"; ADE20K, Cityscapes, Mapillary Vistas) — spec §6.

One panoptic annotation trains all three tasks. Per image the mapper:

1. reads the image (cfg.INPUT.FORMAT) and the RGB panoptic PNG (segment id = R + 256·G + 256²·B);
2. augments both with the same geometry: ResizeShortestEdge(MIN_SIZE_TRAIN, MAX_SIZE_TRAIN,
   MIN_SIZE_TRAIN_SAMPLING) → RandomCrop_CategoryAreaConstraint(CROP.TYPE, CROP.SIZE, CROP.SINGLE_CATEGORY_MAX_AREA,
   ignore) if CROP.ENABLED → ColorAugSSDTransform if COLOR_AUG_SSD (image only) → RandomFlip (INPUT.RANDOM_FLIP).
   The panoptic PNG is transformed as a segmentation (nearest), then decoded to ids;
3. if INPUT.SIZE_DIVISIBILITY > 0, pads right/bottom up to exactly that size: image with 128 (before normalization),
   panoptic ids with 0 (void), hence gt masks with 0 and ``sem_seg`` with the ignore label. A side that is already
   longer than SIZE_DIVISIBILITY is left as it is (never cropped; a warning is logged) — every shipped config crops
   to that size first, so this only matters for custom configs;
4. samples the task: u = ``np.random.uniform(0, 1)``; u < TASK_PROB.SEMANTIC → semantic, elif u < TASK_PROB.INSTANCE
   → instance, else panoptic. The draw uses NumPy's global generator, like Detectron2's augmentations, so
   ``np.random.seed`` makes the whole mapping reproducible (ColorAugSSD alone uses Python's ``random``);
5. derives the ground truth from the (augmented) panoptic segments (``derive_targets``) and the text list
   (``build_text_list``).

Segment conventions: ``segments_info[i]["category_id"]`` must already be a contiguous class id (index into
``metadata.stuff_classes``, which lists ALL classes); an id outside ``0..K-1`` raises ValueError naming it. Crowd
segments are never targets. Pixels whose id is not in ``segments_info`` (and id 0) are void, as in the original;
a segment listed with id 0 raises (0 is void in the COCO panoptic format and is the padding value). The ``sem_seg``
output is the per-pixel class map of the non-crowd segments (ignore label elsewhere), i.e. consistent with the masks:
for the instance task only thing segments are labelled (stuff pixels are the ignore label), as in the original;
a ``sem_seg_file_name`` is read only when the crop needs class areas (SINGLE_CATEGORY_MAX_AREA < 1), and without it
that map is derived from the panoptic PNG instead.

Images without usable segments (none listed, only crowd, or listed ids absent from the PNG) are NOT skipped: they
give empty targets (no masks, a text list of padding only, ``sem_seg`` all ignore), on which the model learns "no
object" with finite losses, as in the original. Input images are read with ``oneformer.utils.image_io.read_image``
(grayscale, RGBA and 16-bit files converted; missing, empty, truncated or undecodable files raise errors naming the
file); a failing augmentation (e.g. a side resized to 0 pixels) raises ValueError naming the record.

Output: the record's fields plus "image" uint8 (3, H, W), "instances" (gt_classes int64 (M,), gt_masks bool
(M, H, W), gt_bboxes Boxes XYXY (M, 4); thing boxes from the masks, [0, 0, 1, 1] for stuff), "sem_seg" int64 (H, W),
"orig_shape" (H, W) of the returned (augmented, padded) image, "task" "The task is {task}", "text"
(NUM_OBJECT_QUERIES − TEXT_ENCODER.N_CTX strings), "thing_ids" (sorted contiguous thing ids).
Records with ``annotations`` (instance json merged in, as for COCO) are refused: use "coco_unified_lsj".
"""
import copy
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances
from detectron2.utils.logger import log_first_n

from ...utils.image_io import ImageReadError, read_image, read_label_image
from ..tokenizer import TASKS
from . import register_dataset_mapper

__all__ = [
    "OneFormerUnifiedDatasetMapper",
    "TASKS",
    "TEXT_PADDING",
    "rgb2id",
    "sample_task",
    "pad_to_size",
    "masks_to_boxes",
    "check_segments",
    "derive_targets",
    "semantic_label_map",
    "build_text_list",
    "targets_to_instances",
    "build_unified_augmentations",
]

logger = logging.getLogger(__name__)

TEXT_PADDING = {"semantic": "a semantic photo", "instance": "an instance photo", "panoptic": "a panoptic photo"}
TEXT_TEMPLATE = "a photo with a {}"
PLACEHOLDER_BOX = (0.0, 0.0, 1.0, 1.0)
IMAGE_PAD_VALUE = 128
PANOPTIC_PAD_VALUE = 0


# --------------------------------------------------------------------------------------------------------------
# pure functions (the mapper logic, testable without files)


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB-encoded panoptic PNG → (H, W) int64 segment ids, id = R + 256·G + 256²·B."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"panoptic PNG must be RGB (H, W, 3), got an array of shape {rgb.shape}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def sample_task(u: float, semantic_prob: float, instance_prob: float) -> str:
    """Task for a uniform draw ``u`` in [0, 1) with CUMULATIVE thresholds (TASK_PROB.SEMANTIC, TASK_PROB.INSTANCE):
    u < semantic_prob → "semantic", elif u < instance_prob → "instance", else "panoptic"."""
    if u < semantic_prob:
        return "semantic"
    if u < instance_prob:
        return "instance"
    return "panoptic"


def pad_to_size(array: np.ndarray, size: Tuple[int, int], value) -> np.ndarray:
    """Pad the first two dims of ``array`` on the right/bottom with ``value`` up to ``size`` (h, w). A dimension
    that is already at least that long is left unchanged (never cropped)."""
    pad_h = max(int(size[0]) - array.shape[0], 0)
    pad_w = max(int(size[1]) - array.shape[1], 0)
    if pad_h == 0 and pad_w == 0:
        return array
    pad = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="constant", constant_values=value)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(M, H, W) bool → (M, 4) float32 XYXY boxes with exclusive right/bottom (Detectron2 BitMasks convention);
    an empty mask gives zeros."""
    boxes = np.zeros((masks.shape[0], 4), dtype=np.float32)
    for i, m in enumerate(masks):
        rows = np.flatnonzero(m.any(axis=1))
        cols = np.flatnonzero(m.any(axis=0))
        if rows.size:
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def check_segments(segments_info: Sequence[Dict], num_classes: int, source: str = "") -> None:
    """Raise ValueError for a segment without id/category_id, with id 0 (void), or whose category_id is not a
    contiguous class id in 0..num_classes-1."""
    where = f"{source}: " if source else ""
    for seg in segments_info:
        if "id" not in seg or "category_id" not in seg:
            raise ValueError(f"{where}segments_info entry {seg!r} lacks 'id' or 'category_id'")
        cid = seg["category_id"]
        if isinstance(cid, bool) or not isinstance(cid, (int, np.integer)) or not 0 <= cid < num_classes:
            raise ValueError(
                f"{where}segment {seg['id']} has category_id {cid!r}, which is not a contiguous class id in "
                f"0..{num_classes - 1} (the dataset loader must map dataset category ids to contiguous ids; "
                f"metadata.stuff_classes lists {num_classes} classes)"
            )
        if int(seg["id"]) == 0:
            raise ValueError(f"{where}segment id 0 (category {cid}) is reserved for void pixels in the panoptic format")


def derive_targets(
    pan_seg: np.ndarray,
    segments_info: Sequence[Dict],
    task: str,
    thing_ids: Sequence[int],
    num_classes: Optional[int] = None,
    source: str = "",
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth of one task from a panoptic id map (spec §6).

    Args:
        pan_seg: (H, W) int segment ids; ids not in ``segments_info`` are void.
        segments_info: dicts with "id", "category_id" (contiguous), optional "iscrowd".
        task: "semantic" | "instance" | "panoptic".
        thing_ids: contiguous ids of thing classes (metadata thing_dataset_id_to_contiguous_id values).
        num_classes: if given, category ids are validated against it (``check_segments``).
    Returns:
        classes (M,) int64, masks (M, H, W) bool, boxes (M, 4) float32 XYXY. Crowd segments and masks that are empty
        (e.g. cropped away) are skipped.
        semantic: one mask per class present (all its segments merged, things and stuff), in increasing class order;
        instance: one mask per thing segment, in ``segments_info`` order;
        panoptic: one mask per segment, in ``segments_info`` order.
        Boxes: from the mask for thing classes, [0, 0, 1, 1] for stuff classes.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if num_classes is not None:
        check_segments(segments_info, num_classes, source)
    things = {int(t) for t in thing_ids}
    h, w = pan_seg.shape[:2]
    classes: List[int] = []
    masks: List[np.ndarray] = []
    if task == "semantic":
        merged: Dict[int, np.ndarray] = {}
        for seg in segments_info:
            if seg.get("iscrowd", 0):
                continue
            cid = int(seg["category_id"])
            mask = pan_seg == seg["id"]
            merged[cid] = merged[cid] | mask if cid in merged else mask
        for cid in sorted(merged):
            if merged[cid].any():
                classes.append(cid)
                masks.append(merged[cid])
    else:
        for seg in segments_info:
            cid = int(seg["category_id"])
            if seg.get("iscrowd", 0) or (task == "instance" and cid not in things):
                continue
            mask = pan_seg == seg["id"]
            if mask.any():
                classes.append(cid)
                masks.append(mask)
    classes_np = np.asarray(classes, dtype=np.int64)
    masks_np = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
    boxes = masks_to_boxes(masks_np)
    for i, cid in enumerate(classes):
        if cid not in things:
            boxes[i] = PLACEHOLDER_BOX
    return classes_np, masks_np, boxes


def semantic_label_map(pan_seg: np.ndarray, segments_info: Sequence[Dict], ignore_label: int,
                       thing_ids: Optional[Sequence[int]] = None) -> np.ndarray:
    """(H, W) int64 class map of the non-crowd segments; ``ignore_label`` on void, crowd and unknown ids. With
    ``thing_ids`` only segments of those classes are labelled (stuff becomes ``ignore_label``): the original's
    instance-task ``sem_seg``."""
    label = np.full(pan_seg.shape[:2], ignore_label, dtype=np.int64)
    keep = None if thing_ids is None else {int(t) for t in thing_ids}
    for seg in segments_info:
        if seg.get("iscrowd", 0) or (keep is not None and int(seg["category_id"]) not in keep):
            continue
        label[pan_seg == seg["id"]] = int(seg["category_id"])
    return label


def build_text_list(classes: Sequence[int], task: str, class_names: Sequence[str], length: int) -> List[str]:
    """The per-image text list (spec §3 "Text mapper").

    For each class in contiguous-id order, "a photo with a {name}" (name verbatim) once per GT mask of that class;
    truncated to ``length``; padded with "a semantic photo" / "an instance photo" / "a panoptic photo".
    The order follows the classes, not the order of the masks.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    counts = [0] * len(class_names)
    for c in classes:
        c = int(c)
        if not 0 <= c < len(class_names):
            raise ValueError(f"class id {c} has no name: {len(class_names)} class names are known")
        counts[c] += 1
    texts: List[str] = []
    for name, n in zip(class_names, counts):
        texts.extend([TEXT_TEMPLATE.format(name)] * n)
    texts = texts[:length]
    return texts + [TEXT_PADDING[task]] * (length - len(texts))


def targets_to_instances(image_shape, classes: np.ndarray, masks: np.ndarray, boxes: np.ndarray) -> Instances:
    """Instances(image_shape) with gt_classes int64 (M,), gt_masks bool tensor (M, H, W), gt_bboxes Boxes (M, 4)."""
    h, w = image_shape
    inst = Instances((int(h), int(w)))
    inst.gt_classes = torch.as_tensor(np.asarray(classes, dtype=np.int64).reshape(-1))
    inst.gt_masks = torch.from_numpy(np.ascontiguousarray(masks, dtype=bool).reshape(-1, int(h), int(w)))
    inst.gt_bboxes = Boxes(torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)))
    return inst


# --------------------------------------------------------------------------------------------------------------
# config helpers shared by the training mappers


def build_unified_augmentations(cfg, ignore_label: int, category_area_crop: bool = True) -> List:
    """ResizeShortestEdge → (RandomCrop_CategoryAreaConstraint | RandomCrop) → ColorAugSSDTransform → RandomFlip,
    from cfg.INPUT (spec §6). ``category_area_crop`` False uses a plain RandomCrop (data without class maps)."""
    augs = [
        T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)
    ]
    if cfg.INPUT.CROP.ENABLED:
        if category_area_crop:
            augs.append(
                T.RandomCrop_CategoryAreaConstraint(
                    cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE, cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA, ignore_label
                )
            )
        else:
            augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INPUT.COLOR_AUG_SSD:
        # Detectron2's PointRend project ships the SSD colour augmentation (brightness ±32, contrast/saturation
        # 0.5–1.5, hue ±18); imported lazily because the package also registers PointRend heads.
        from detectron2.projects.point_rend import ColorAugSSDTransform

        augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    flip = cfg.INPUT.RANDOM_FLIP
    if flip not in ("none", "horizontal", "vertical"):
        raise ValueError(f"cfg.INPUT.RANDOM_FLIP must be 'none', 'horizontal' or 'vertical', got {flip!r}")
    if flip != "none":
        augs.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    return augs


def training_mapper_kwargs(cfg, is_train: bool, mapper_name: str, class_names_key: str = "stuff_classes") -> Dict:
    """The cfg/metadata-derived arguments every OneFormer training mapper takes (except augmentations).

    Metadata comes from the FIRST dataset in cfg.DATASETS.TRAIN: ``class_names_key`` (stuff_classes: all classes in
    contiguous order), thing ids (values of thing_dataset_id_to_contiguous_id), ignore_label (default
    MODEL.SEM_SEG_HEAD.IGNORE_VALUE).
    """
    if not is_train:
        raise ValueError(f"{mapper_name!r} is a training mapper; evaluation uses the 'oneformer_test' mapper")
    if not cfg.DATASETS.TRAIN:
        raise ValueError(f"{mapper_name!r} needs cfg.DATASETS.TRAIN to find the class names in the metadata")
    dataset = cfg.DATASETS.TRAIN[0]
    meta = MetadataCatalog.get(dataset)
    class_names = meta.get(class_names_key, None)
    if not class_names:
        raise ValueError(f"metadata of dataset {dataset!r} has no {class_names_key} (needed for the text list)")
    thing_map = meta.get("thing_dataset_id_to_contiguous_id", None) or {}
    num_queries = cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES
    n_ctx = cfg.MODEL.TEXT_ENCODER.N_CTX
    text_length = num_queries - n_ctx
    if text_length <= 0:
        raise ValueError(f"MODEL.ONE_FORMER.NUM_OBJECT_QUERIES ({num_queries}) must exceed MODEL.TEXT_ENCODER.N_CTX "
                         f"({n_ctx}): the text list has NUM_OBJECT_QUERIES − N_CTX entries")
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    if len(class_names) != num_classes:
        logger.warning(f"{mapper_name}: dataset {dataset!r} has {len(class_names)} {class_names_key} but "
                       f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes}")
    return {
        "is_train": True,
        "image_format": cfg.INPUT.FORMAT,
        "class_names": list(class_names),
        "thing_ids": sorted(int(v) for v in thing_map.values()),
        "ignore_label": int(meta.get("ignore_label", cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)),
        "text_length": text_length,
        "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
        "semantic_prob": cfg.INPUT.TASK_PROB.SEMANTIC,
        "instance_prob": cfg.INPUT.TASK_PROB.INSTANCE,
    }


class TrainingMapperBase:
    """State and helpers shared by the OneFormer training mappers (reading, padding, task draw, output packing)."""

    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List,
        image_format: str,
        class_names: Sequence[str],
        thing_ids: Sequence[int],
        ignore_label: int,
        text_length: int,
        size_divisibility: int = -1,
        semantic_prob: float = 0.33,
        instance_prob: float = 0.66,
    ):
        for name, p in (("TASK_PROB.SEMANTIC", semantic_prob), ("TASK_PROB.INSTANCE", instance_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"INPUT.{name} must be in [0, 1], got {p}")
        if text_length <= 0:
            raise ValueError(f"text_length must be positive, got {text_length}")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.class_names = list(class_names)
        self.thing_ids = sorted(int(t) for t in thing_ids)
        self.ignore_label = int(ignore_label)
        self.text_length = int(text_length)
        self.size_divisibility = int(size_divisibility)
        self.semantic_prob = float(semantic_prob)
        self.instance_prob = float(instance_prob)
        logging.getLogger(__name__).info(
            f"[{type(self).__name__}] augmentations: {augmentations}; fixed-size padding: {self.size_divisibility}"
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _sample_task(self) -> str:
        """Draw the task with NumPy's global generator (see the module docstring)."""
        return sample_task(np.random.uniform(0.0, 1.0), self.semantic_prob, self.instance_prob)

    @staticmethod
    def _read(path: str, fmt: Optional[str], what: str, record: str) -> np.ndarray:
        """Read an input image ("Image": RGB/BGR, with grayscale/RGBA/16-bit converted like the predictor does) or
        a label PNG (Detectron2's reader, values as stored). A missing file raises FileNotFoundError, an empty,
        truncated or undecodable one ImageReadError; both name the file and the dataset record."""
        if what == "Image" and fmt in ("RGB", "BGR"):
            where = "" if record == path else f" (dataset record {record})"
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{what} {path}{where} does not exist")
            try:
                return read_image(path, fmt)
            except ImageReadError as e:
                raise ImageReadError(f"{what} {e}{where}") from e
        return read_label_image(path, fmt, what, record)

    @classmethod
    def _read_semantic(cls, path: str, record: str) -> np.ndarray:
        """A semantic label PNG as an (H, W) array of class ids, as stored; a PNG with several channels (e.g. an
        RGB-coloured label image) raises ValueError instead of being reduced to its first channel."""
        sem_seg = cls._read(path, None, "Semantic PNG", record)
        if sem_seg.ndim == 3:
            if sem_seg.shape[2] != 1:
                raise ValueError(f"Semantic PNG {path} (dataset record {record}) has {sem_seg.shape[2]} channels; "
                                 "expected a single-channel label image of class ids (colours are not class ids: "
                                 "python tools/validate_dataset.py checks them)")
            sem_seg = sem_seg[..., 0]
        return sem_seg

    @staticmethod
    def _augment(augmentations, aug_input, record: str):
        """``augmentations(aug_input)``; a failure (e.g. a side resized to 0 pixels for an extreme aspect ratio)
        becomes a ValueError naming the record, the image size and the settings involved."""
        h, w = aug_input.image.shape[:2]
        try:
            return augmentations(aug_input)
        except Exception as e:
            raise ValueError(
                f"Dataset record {record}: the augmentations failed on its {h}×{w} image ({type(e).__name__}: {e}). "
                "An extreme aspect ratio can make a side 0 pixels after resizing (INPUT.MIN_SIZE_TRAIN/MAX_SIZE_TRAIN, "
                "INPUT.IMAGE_SIZE/MIN_SCALE, INPUT.CROP.SIZE); remove or fix the image."
            ) from e

    def _pad_size(self, shape) -> Optional[Tuple[int, int]]:
        """(S, S) for fixed-size padding, or None when disabled; warns once about sides longer than S."""
        if self.size_divisibility <= 0:
            return None
        s = self.size_divisibility
        if shape[0] > s or shape[1] > s:
            log_first_n(
                logging.WARNING,
                f"Image of size {tuple(shape[:2])} is larger than INPUT.SIZE_DIVISIBILITY={s}: the longer side is not "
                "padded (nor cropped); enable INPUT.CROP with that size for fixed-size batches.",
                n=1,
                name=__name__,
            )
        return (s, s)

    def _pack(self, dataset_dict, image, task, classes, masks, boxes, sem_seg=None):
        """Write the model inputs into ``dataset_dict`` (image HWC uint8 → CHW tensor)."""
        shape = image.shape[:2]
        if shape[0] == 0 or shape[1] == 0:
            raise ValueError(
                f"Dataset record {dataset_dict.get('file_name', '?')}: the augmentations produced an empty "
                f"{shape[0]}×{shape[1]} image; INPUT.CROP.SIZE is too small for this image (a 'relative' crop of a "
                "tiny image rounds to 0 pixels). Use a larger INPUT.CROP.SIZE or an 'absolute' crop."
            )
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        dataset_dict["instances"] = targets_to_instances(shape, classes, masks, boxes)
        if sem_seg is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg.astype(np.int64))
        dataset_dict["orig_shape"] = tuple(int(s) for s in shape)
        dataset_dict["task"] = f"The task is {task}"
        dataset_dict["text"] = build_text_list(classes, task, self.class_names, self.text_length)
        dataset_dict["thing_ids"] = list(self.thing_ids)
        return dataset_dict


# --------------------------------------------------------------------------------------------------------------


@register_dataset_mapper("oneformer_unified")
class OneFormerUnifiedDatasetMapper(TrainingMapperBase):
    """Training mapper for panoptic records: task sampling, GT for that task, text list (see module docstring)."""

    reject_annotations = True

    @configurable
    def __init__(self, is_train: bool = True, **kwargs):
        """Args: as ``TrainingMapperBase`` (augmentations, image_format, class_names, thing_ids, ignore_label,
        text_length, size_divisibility, semantic_prob, instance_prob)."""
        super().__init__(is_train, **kwargs)
        self._crop_needs_sem_seg = any(
            isinstance(a, T.RandomCrop_CategoryAreaConstraint) and a.single_category_max_area < 1.0
            for a in self.augmentations.augs
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = training_mapper_kwargs(cfg, is_train, "oneformer_unified")
        ret["augmentations"] = build_unified_augmentations(cfg, ret["ignore_label"])
        return ret

    def apply_augmentations(self, image: np.ndarray, pan_seg_rgb: np.ndarray, sem_seg: Optional[np.ndarray] = None,
                            record: str = "?"):
        """Augment the image (and the optional class map the crop may use) and apply the same transforms to the RGB
        panoptic PNG (nearest). Returns (image, panoptic ids (H, W) int64, transforms)."""
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self._augment(self.augmentations, aug_input, record)
        pan_seg_rgb = transforms.apply_segmentation(pan_seg_rgb)
        return aug_input.image, rgb2id(pan_seg_rgb), transforms

    def _check_record(self, dataset_dict) -> str:
        record = dataset_dict.get("file_name", "<record without file_name>")
        if self.reject_annotations and "annotations" in dataset_dict:
            raise ValueError(
                f"Dataset record {record} has 'annotations'; the 'oneformer_unified' mapper derives every target from "
                "the panoptic PNG and refuses records with instance annotations. Use a panoptic dataset without "
                "instance annotations, or the COCO mapper (INPUT.DATASET_MAPPER_NAME 'coco_unified_lsj')."
            )
        if not dataset_dict.get("pan_seg_file_name"):
            raise ValueError(
                f"Dataset record {record} has no 'pan_seg_file_name': {type(self).__name__} needs panoptic annotations "
                "(use 'oneformer_semantic' or 'oneformer_instance' for semantic-only or instance-only data)."
            )
        if "segments_info" not in dataset_dict:
            raise ValueError(f"Dataset record {record} has a panoptic PNG but no 'segments_info'.")
        check_segments(dataset_dict["segments_info"], self.num_classes, dataset_dict["pan_seg_file_name"])
        return record

    def __call__(self, dataset_dict):
        record = self._check_record(dataset_dict)
        dataset_dict = copy.deepcopy(dataset_dict)
        segments_info = dataset_dict["segments_info"]
        pan_file = dataset_dict["pan_seg_file_name"]

        image = self._read(dataset_dict["file_name"], self.image_format, "Image", record)
        utils.check_image_size(dataset_dict, image)
        pan_rgb = self._read(pan_file, "RGB", "Panoptic PNG", record)
        if pan_rgb.shape[:2] != image.shape[:2]:
            raise ValueError(f"Panoptic PNG {pan_file} has size {pan_rgb.shape[:2]} but image {record} has size "
                             f"{image.shape[:2]}")
        sem_seg = None
        if self._crop_needs_sem_seg:  # class areas for RandomCrop_CategoryAreaConstraint
            if dataset_dict.get("sem_seg_file_name"):
                sem_seg = self._read_semantic(dataset_dict["sem_seg_file_name"], record).astype("double")
            else:
                sem_seg = semantic_label_map(rgb2id(pan_rgb), segments_info, self.ignore_label).astype("double")

        image, pan_seg, _ = self.apply_augmentations(image, pan_rgb, sem_seg, record)
        pad = self._pad_size(image.shape)
        if pad is not None:
            image = pad_to_size(image, pad, IMAGE_PAD_VALUE)
            pan_seg = pad_to_size(pan_seg, pad, PANOPTIC_PAD_VALUE)

        task = self._sample_task()
        classes, masks, boxes = derive_targets(pan_seg, segments_info, task, self.thing_ids)
        # the original labels only the targets' pixels: for the instance task, thing classes only
        sem = semantic_label_map(pan_seg, segments_info, self.ignore_label,
                                 self.thing_ids if task == "instance" else None)
        return self._pack(dataset_dict, image, task, classes, masks, boxes, sem)
