"""The synthetic shapes dataset: ``synthetic_panoptic_{train,val}`` (evaluator_type "coco_panoptic_seg").

Written by ``python tools/train_synthetic.py`` (or its ``--generate-only`` mode): coloured shapes (4 thing classes)
on textured background regions (3 stuff classes), in COCO panoptic format. Files (under
``$DETECTRON2_DATASETS/synthetic_shapes`` or any root given to ``register_all_synthetic``)::

    images/{train,val}/*.png                 RGB images
    panoptic_{train,val}/*.png               RGB panoptic PNGs (segment id = R + 256·G + 256²·B)
    panoptic_{train,val}.json                COCO panoptic json (images, annotations, categories with isthing)
    panoptic_semseg_{train,val}/*.png        contiguous class ids 0..6, 255 = void
    instances_{train,val}.json               COCO instances json of the things (RLE masks), for mask AP

The same files are also registered as a semantic-only view ``synthetic_sem_seg_{train,val}`` (images + label PNGs)
and an instance-only view ``synthetic_instance_{train,val}`` (images + instances json), used by the mixed-data example
``configs/synthetic/oneformer_synthetic_mixed.yaml``.

Contiguous ids follow ``SYNTHETIC_CATEGORIES``: the 4 things first (0..3, as Detectron2's COCO instance evaluator
needs), then the 3 stuff classes (4..6). The names are registered at import time from the root as it is then;
registration reads no file, so the data may be generated afterwards.
"""
import os

from .custom import datasets_root, register_instance_dataset, register_panoptic_dataset, register_semantic_dataset

__all__ = [
    "SYNTHETIC_CATEGORIES",
    "SYNTHETIC_DIRNAME",
    "SYNTHETIC_SPLITS",
    "synthetic_paths",
    "register_all_synthetic",
    "register_synthetic_views",
]

SYNTHETIC_DIRNAME = "synthetic_shapes"
SYNTHETIC_SPLITS = ("train", "val")

# things first: contiguous ids 0..3 are the thing ids, 4..6 the stuff ids
SYNTHETIC_CATEGORIES = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 40, 40]},
    {"id": 2, "name": "square", "isthing": 1, "color": [240, 210, 30]},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [190, 50, 200]},
    {"id": 4, "name": "cross", "isthing": 1, "color": [245, 245, 245]},
    {"id": 5, "name": "sky", "isthing": 0, "color": [120, 180, 240]},
    {"id": 6, "name": "grass", "isthing": 0, "color": [60, 140, 50]},
    {"id": 7, "name": "wall", "isthing": 0, "color": [120, 110, 100]},
]


def synthetic_paths(dataset_dir, split):
    """The files of one split under ``dataset_dir`` (the ``synthetic_shapes`` folder itself)."""
    return {
        "image_root": os.path.join(dataset_dir, "images", split),
        "panoptic_root": os.path.join(dataset_dir, f"panoptic_{split}"),
        "panoptic_json": os.path.join(dataset_dir, f"panoptic_{split}.json"),
        "sem_seg_root": os.path.join(dataset_dir, f"panoptic_semseg_{split}"),
        "instance_json": os.path.join(dataset_dir, f"instances_{split}.json"),
    }


def register_all_synthetic(root=None, prefix="", dataset_dir=None):
    """Register ``prefix + "synthetic_panoptic_{train,val}"``; returns the names.

    Files are read from ``dataset_dir`` if given, else from ``<root>/synthetic_shapes`` (root default:
    ``$DETECTRON2_DATASETS`` read now). Re-registering replaces an earlier registration.
    """
    if dataset_dir is None:
        dataset_dir = os.path.join(datasets_root() if root is None else root, SYNTHETIC_DIRNAME)
    names = []
    for split in SYNTHETIC_SPLITS:
        name = f"{prefix}synthetic_panoptic_{split}"
        register_panoptic_dataset(
            name,
            categories=SYNTHETIC_CATEGORIES,
            evaluator_type="coco_panoptic_seg",
            image_ext=".png",
            **synthetic_paths(dataset_dir, split),
        )
        names.append(name)
    return names


def register_synthetic_views(root=None, prefix="", dataset_dir=None):
    """Register ``prefix + "synthetic_sem_seg_{split}"`` (semantic-only: the label PNGs) and
    ``prefix + "synthetic_instance_{split}"`` (instance-only: the instances json) over the same files as
    ``register_all_synthetic``; returns the names."""
    if dataset_dir is None:
        dataset_dir = os.path.join(datasets_root() if root is None else root, SYNTHETIC_DIRNAME)
    names = []
    for split in SYNTHETIC_SPLITS:
        paths = synthetic_paths(dataset_dir, split)
        register_semantic_dataset(f"{prefix}synthetic_sem_seg_{split}", image_root=paths["image_root"],
                                  sem_seg_root=paths["sem_seg_root"], image_ext="png",
                                  stuff_classes=[c["name"] for c in SYNTHETIC_CATEGORIES],
                                  stuff_colors=[c["color"] for c in SYNTHETIC_CATEGORIES])
        register_instance_dataset(f"{prefix}synthetic_instance_{split}", image_root=paths["image_root"],
                                  json_file=paths["instance_json"],
                                  categories=[c for c in SYNTHETIC_CATEGORIES if c["isthing"]])
        names += [f"{prefix}synthetic_sem_seg_{split}", f"{prefix}synthetic_instance_{split}"]
    return names


register_all_synthetic()
register_synthetic_views()
