"""Tiny on-disk data for the dataset-mapper tests: one 16×24 panoptic record, hand-computed targets, a cfg.

Panoptic layout (segment id : contiguous class; classes 0 sky, 1 "road, route", 2 "window ", 3 person, 4 car;
things = 3, 4):

    rows  0-3 : id 1 (sky) everywhere
    rows  4-7 : cols 0-11 id 2 (road), cols 12-23 id 300 (road)          two segments of one stuff class
    rows  8-11: cols 0-5 id 4 (person), 6-9 void (0), 10-15 id 70000 (person), 16-23 void
    rows 12-15: cols 0-7 id 6 (car, CROWD), 8-15 id 7 (window), 16-23 id 99 (not in segments_info → void)

segments_info lists id 8 (car) too, which has no pixel. Ids 300 and 70000 use the G and B channels.
"""
import os

import numpy as np
from detectron2.data import MetadataCatalog
from PIL import Image

from tests.tiny import tiny_cfg

H, W = 16, 24
DATASET = "oneformer_mapper_tiny_panoptic"
CLASS_NAMES = ["sky", "road, route", "window ", "person", "car"]
THING_IDS = [3, 4]
IGNORE = 255

# segments_info order deliberately differs from class order
SEGMENTS_INFO = [
    {"id": 7, "category_id": 2, "isthing": 0, "iscrowd": 0},
    {"id": 4, "category_id": 3, "isthing": 1, "iscrowd": 0},
    {"id": 1, "category_id": 0, "isthing": 0, "iscrowd": 0},
    {"id": 2, "category_id": 1, "isthing": 0, "iscrowd": 0},
    {"id": 6, "category_id": 4, "isthing": 1, "iscrowd": 1},
    {"id": 300, "category_id": 1, "isthing": 0, "iscrowd": 0},
    {"id": 70000, "category_id": 3, "isthing": 1, "iscrowd": 0},
    {"id": 8, "category_id": 4, "isthing": 1, "iscrowd": 0},
]


def tiny_metadata():
    meta = MetadataCatalog.get(DATASET)
    if not hasattr(meta, "stuff_classes"):
        meta.set(
            stuff_classes=list(CLASS_NAMES),
            thing_classes=[CLASS_NAMES[i] for i in THING_IDS],
            # dataset ids differ from the contiguous ids: the mapper must use the VALUES
            thing_dataset_id_to_contiguous_id={13: 3, 14: 4},
            ignore_label=IGNORE,
        )
    return meta


def pan_ids() -> np.ndarray:
    ids = np.zeros((H, W), dtype=np.int64)
    ids[0:4, :] = 1
    ids[4:8, 0:12] = 2
    ids[4:8, 12:24] = 300
    ids[8:12, 0:6] = 4
    ids[8:12, 10:16] = 70000
    ids[12:16, 0:8] = 6
    ids[12:16, 8:16] = 7
    ids[12:16, 16:24] = 99
    return ids


def id2rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def region(rows, cols) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[rows, cols] = True
    return m


# hand-computed masks
SKY = region(slice(0, 4), slice(None))
ROAD_L = region(slice(4, 8), slice(0, 12))
ROAD_R = region(slice(4, 8), slice(12, 24))
PERSON_1 = region(slice(8, 12), slice(0, 6))
PERSON_2 = region(slice(8, 12), slice(10, 16))
WINDOW = region(slice(12, 16), slice(8, 16))
PH = [0.0, 0.0, 1.0, 1.0]

EXPECTED = {
    "semantic": {
        "classes": [0, 1, 2, 3],
        "masks": [SKY, ROAD_L | ROAD_R, WINDOW, PERSON_1 | PERSON_2],
        "boxes": [PH, PH, PH, [0, 8, 16, 12]],
        "texts": ["a photo with a sky", "a photo with a road, route", "a photo with a window ",
                  "a photo with a person"],
    },
    "instance": {
        "classes": [3, 3],
        "masks": [PERSON_1, PERSON_2],
        "boxes": [[0, 8, 6, 12], [10, 8, 16, 12]],
        "texts": ["a photo with a person", "a photo with a person"],
    },
    "panoptic": {
        "classes": [2, 3, 0, 1, 1, 3],
        "masks": [WINDOW, PERSON_1, SKY, ROAD_L, ROAD_R, PERSON_2],
        "boxes": [PH, [0, 8, 6, 12], PH, PH, PH, [10, 8, 16, 12]],
        # class order, not mask order
        "texts": ["a photo with a sky", "a photo with a road, route", "a photo with a road, route",
                  "a photo with a window ", "a photo with a person", "a photo with a person"],
    },
}
PADDING = {"semantic": "a semantic photo", "instance": "an instance photo", "panoptic": "a panoptic photo"}


def expected_sem_seg(task: str = "panoptic") -> np.ndarray:
    """The mapper's ``sem_seg``, written by hand: every non-crowd segment, or only things for the instance task
    (the original's instance dict labels only its targets' pixels)."""
    sem = np.full((H, W), IGNORE, dtype=np.int64)
    if task != "instance":
        sem[SKY] = 0
        sem[ROAD_L | ROAD_R] = 1
        sem[WINDOW] = 2
    sem[PERSON_1 | PERSON_2] = 3
    return sem


def image_array(seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, size=(H, W, 3), dtype=np.uint8)


def write_record(root, name: str = "img", with_sem_seg: bool = True) -> dict:
    """Write image, panoptic PNG (and semantic PNG) under ``root``; return the panoptic dataset record."""
    root = str(root)
    img_file = os.path.join(root, f"{name}.png")  # lossless so tests can compare pixels
    pan_file = os.path.join(root, f"{name}_pan.png")
    Image.fromarray(image_array()).save(img_file)
    Image.fromarray(id2rgb(pan_ids())).save(pan_file)
    record = {
        "file_name": img_file,
        "image_id": name,
        "height": H,
        "width": W,
        "pan_seg_file_name": pan_file,
        "segments_info": [dict(s) for s in SEGMENTS_INFO],
    }
    if with_sem_seg:
        sem_file = os.path.join(root, f"{name}_sem.png")
        sem = expected_sem_seg()
        sem[12:16, 0:8] = 4  # semantic PNGs label crowd regions with their class
        Image.fromarray(sem.astype(np.uint8)).save(sem_file)
        record["sem_seg_file_name"] = sem_file
    return record


def mapper_cfg(num_queries: int = 12, n_ctx: int = 4):
    """Tiny cfg whose augmentations are the identity: no crop, no colour aug, no flip, short side = 16."""
    tiny_metadata()
    cfg = tiny_cfg(is_train=True)
    cfg.DATASETS.TRAIN = (DATASET,)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(CLASS_NAMES)
    cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES = num_queries
    cfg.MODEL.TEXT_ENCODER.N_CTX = n_ctx
    cfg.INPUT.MIN_SIZE_TRAIN = (H,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.CROP.ENABLED = False
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    return cfg


def unified_mapper(cfg=None, task=None, monkeypatch=None):
    """A training OneFormerUnifiedDatasetMapper on ``cfg`` (default :func:`mapper_cfg`); with ``task``, every call
    samples that task (through ``monkeypatch``)."""
    from oneformer.data.dataset_mappers.oneformer_unified_dataset_mapper import OneFormerUnifiedDatasetMapper

    mapper = OneFormerUnifiedDatasetMapper(cfg if cfg is not None else mapper_cfg(), is_train=True)
    if task is not None:
        monkeypatch.setattr(mapper, "_sample_task", lambda: task)
    return mapper
