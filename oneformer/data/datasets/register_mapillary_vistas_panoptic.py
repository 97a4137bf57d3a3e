"""Mapillary Vistas v1.2 panoptic (65 classes; label 65 = unlabeled/ignore): ``mapillary_vistas_panoptic_{train,val}``.

Files (under ``$DETECTRON2_DATASETS/mapillary_vistas``, as unpacked from the v1.2 release)::

    {training,validation}/images/*.jpg
    {training,validation}/panoptic/*.png             RGB panoptic PNGs
    {training,validation}/panoptic/panoptic_2018.json
    {training,validation}/labels/*.png               semantic labels 0..64, 65 = unlabeled

Panoptic category ids are 1..65 (the v1.2 label index + 1) and map to contiguous ids 0..64, the values of the
semantic label PNGs. ``thing_classes`` and ``stuff_classes`` both list all 65 names (as for Cityscapes);
``thing_dataset_id_to_contiguous_id`` holds the thing classes and ``stuff_dataset_id_to_contiguous_id`` all of them.
"""
import os

from .custom import datasets_root, load_panoptic_json, panoptic_split_metadata, register_or_replace

__all__ = [
    "MAPILLARY_VISTAS_CATEGORIES",
    "get_mapillary_vistas_panoptic_metadata",
    "register_all_mapillary_vistas_panoptic",
]

# (readable name, color, isthing) of the 65 evaluated v1.2 labels, in label order; the 66th, "Unlabeled", is the
# ignore label 65.
_V12_LABELS = (
    ("Bird", (165, 42, 42), 1),
    ("Ground Animal", (0, 192, 0), 1),
    ("Curb", (196, 196, 196), 0),
    ("Fence", (190, 153, 153), 0),
    ("Guard Rail", (180, 165, 180), 0),
    ("Barrier", (90, 120, 150), 0),
    ("Wall", (102, 102, 156), 0),
    ("Bike Lane", (128, 64, 255), 0),
    ("Crosswalk - Plain", (140, 140, 200), 1),
    ("Curb Cut", (170, 170, 170), 0),
    ("Parking", (250, 170, 160), 0),
    ("Pedestrian Area", (96, 96, 96), 0),
    ("Rail Track", (230, 150, 140), 0),
    ("Road", (128, 64, 128), 0),
    ("Service Lane", (110, 110, 110), 0),
    ("Sidewalk", (244, 35, 232), 0),
    ("Bridge", (150, 100, 100), 0),
    ("Building", (70, 70, 70), 0),
    ("Tunnel", (150, 120, 90), 0),
    ("Person", (220, 20, 60), 1),
    ("Bicyclist", (255, 0, 0), 1),
    ("Motorcyclist", (255, 0, 100), 1),
    ("Other Rider", (255, 0, 200), 1),
    ("Lane Marking - Crosswalk", (200, 128, 128), 1),
    ("Lane Marking - General", (255, 255, 255), 0),
    ("Mountain", (64, 170, 64), 0),
    ("Sand", (230, 160, 50), 0),
    ("Sky", (70, 130, 180), 0),
    ("Snow", (190, 255, 255), 0),
    ("Terrain", (152, 251, 152), 0),
    ("Vegetation", (107, 142, 35), 0),
    ("Water", (0, 170, 30), 0),
    ("Banner", (255, 255, 128), 1),
    ("Bench", (250, 0, 30), 1),
    ("Bike Rack", (100, 140, 180), 1),
    ("Billboard", (220, 220, 220), 1),
    ("Catch Basin", (220, 128, 128), 1),
    ("CCTV Camera", (222, 40, 40), 1),
    ("Fire Hydrant", (100, 170, 30), 1),
    ("Junction Box", (40, 40, 40), 1),
    ("Mailbox", (33, 33, 33), 1),
    ("Manhole", (100, 128, 160), 1),
    ("Phone Booth", (142, 0, 0), 1),
    ("Pothole", (70, 100, 150), 0),
    ("Street Light", (210, 170, 100), 1),
    ("Pole", (153, 153, 153), 1),
    ("Traffic Sign Frame", (128, 128, 128), 1),
    ("Utility Pole", (0, 0, 80), 1),
    ("Traffic Light", (250, 170, 30), 1),
    ("Traffic Sign (Back)", (192, 192, 192), 1),
    ("Traffic Sign (Front)", (220, 220, 0), 1),
    ("Trash Can", (140, 140, 20), 1),
    ("Bicycle", (119, 11, 32), 1),
    ("Boat", (150, 0, 255), 1),
    ("Bus", (0, 60, 100), 1),
    ("Car", (0, 0, 142), 1),
    ("Caravan", (0, 0, 90), 1),
    ("Motorcycle", (0, 0, 230), 1),
    ("On Rails", (0, 80, 100), 0),
    ("Other Vehicle", (128, 64, 64), 1),
    ("Trailer", (0, 0, 110), 1),
    ("Truck", (0, 0, 70), 1),
    ("Wheeled Slow", (0, 0, 192), 1),
    ("Car Mount", (32, 32, 32), 0),
    ("Ego Vehicle", (120, 10, 10), 0),
)
assert len(_V12_LABELS) == 65

MAPILLARY_VISTAS_CATEGORIES = [
    {"id": i + 1, "name": name, "isthing": isthing, "color": list(color)}
    for i, (name, color, isthing) in enumerate(_V12_LABELS)
]

_PREDEFINED_SPLITS_MAPILLARY_PANOPTIC = {
    # name: (image dir, panoptic PNG dir, panoptic json, semantic dir)
    "mapillary_vistas_panoptic_train": (
        "mapillary_vistas/training/images",
        "mapillary_vistas/training/panoptic",
        "mapillary_vistas/training/panoptic/panoptic_2018.json",
        "mapillary_vistas/training/labels",
    ),
    "mapillary_vistas_panoptic_val": (
        "mapillary_vistas/validation/images",
        "mapillary_vistas/validation/panoptic",
        "mapillary_vistas/validation/panoptic/panoptic_2018.json",
        "mapillary_vistas/validation/labels",
    ),
}


def get_mapillary_vistas_panoptic_metadata():
    cats = MAPILLARY_VISTAS_CATEGORIES
    return {
        "thing_classes": [c["name"] for c in cats],
        "thing_colors": [c["color"] for c in cats],
        "stuff_classes": [c["name"] for c in cats],
        "stuff_colors": [c["color"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats) if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }


def register_all_mapillary_vistas_panoptic(root=None, prefix=""):
    """Register ``{prefix}mapillary_vistas_panoptic_{train,val}`` with files under ``root``."""
    root = datasets_root() if root is None else root
    meta = get_mapillary_vistas_panoptic_metadata()
    names = []
    for name, paths in _PREDEFINED_SPLITS_MAPILLARY_PANOPTIC.items():
        image_dir, pan_dir, pan_json, sem_dir = (os.path.join(root, p) for p in paths)
        register_or_replace(
            prefix + name,
            lambda i=image_dir, p=pan_dir, j=pan_json, s=sem_dir: load_panoptic_json(
                j,
                i,
                p,
                s,
                meta["thing_dataset_id_to_contiguous_id"],
                meta["stuff_dataset_id_to_contiguous_id"],
                image_ext=".jpg",
                hint="Download and unpack Mapillary Vistas v1.2 (see datasets/README.md).",
            ),
            panoptic_split_metadata(
                meta,
                image_root=image_dir,
                panoptic_root=pan_dir,
                panoptic_json=pan_json,
                sem_seg_root=sem_dir,
                evaluator_type="mapillary_vistas_panoptic_seg",
                ignore_label=65,
            ),
        )
        names.append(prefix + name)
    return names
