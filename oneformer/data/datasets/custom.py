"""Registering your own data for OneFormer.

One call registers a panoptic dataset (COCO panoptic format: a json with ``images``/``annotations``/``categories``
and RGB-encoded PNGs, segment id = R + 256·G + 256²·B) together with every metadata field the training mappers, the
model and the evaluators read::

    from oneformer.data.datasets import register_panoptic_dataset

    register_panoptic_dataset(
        "my_panoptic_train",
        image_root="datasets/my_data/images/train",
        panoptic_root="datasets/my_data/panoptic_train",
        panoptic_json="datasets/my_data/panoptic_train.json",
        sem_seg_root="datasets/my_data/panoptic_semseg_train",   # PNGs holding contiguous ids, 255 = ignore
        categories=None,                                        # None: the json's "categories", in that order
    )

Then use ``DATASETS.TRAIN: ("my_panoptic_train",)`` and ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` = number of categories,
and check the files first with ``python tools/validate_dataset.py my_panoptic_train --import <module making
this call>``.

Contiguous ids (what the model predicts) follow the order of ``categories``: the i-th category gets contiguous id i.
``stuff_classes`` lists ALL category names in that order (things included, so semantic evaluation covers every
class) and ``thing_classes`` the thing names in the same order. The semantic PNGs under ``sem_seg_root`` must hold these
contiguous ids (``datasets/prepare_coco_semantic_annos_from_panoptic_annos.py`` writes them from the panoptic
annotations). ``register_semantic_dataset`` and ``register_instance_dataset`` cover semantic-only and instance-only
(COCO instances json) data.

The module also holds the pieces the built-in registrations share: ``load_panoptic_json`` (the panoptic loader with
clear errors), ``load_instance_json`` (a COCO-instances loader mapping category ids through fixed metadata),
``build_panoptic_metadata``, ``panoptic_split_metadata``, ``register_or_replace`` and ``unregister``.
"""
import json
import logging
import os
import random

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import load_coco_json, load_sem_seg, register_coco_instances

__all__ = [
    "register_panoptic_dataset",
    "register_semantic_dataset",
    "register_instance_dataset",
    "build_panoptic_metadata",
    "validate_categories",
    "load_panoptic_json",
    "load_instance_json",
    "register_or_replace",
    "unregister",
    "panoptic_split_metadata",
    "datasets_root",
]

logger = logging.getLogger(__name__)

KNOWN_EVALUATOR_TYPES = (
    "sem_seg",
    "coco",
    "coco_panoptic_seg",
    "ade20k_panoptic_seg",
    "cityscapes_panoptic_seg",
    "mapillary_vistas_panoptic_seg",
    "cityscapes_instance",
    "cityscapes_sem_seg",
)


# --------------------------------------------------------------------------------------------------------------
# registration helpers


def datasets_root():
    """``$DETECTRON2_DATASETS`` (default ``datasets``), read at call time, with ``~`` expanded."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def unregister(name):
    """Remove ``name`` from DatasetCatalog and MetadataCatalog where it is registered; returns None."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def register_or_replace(name, loader, metadata):
    """Register ``loader`` under ``name`` with ``metadata``, replacing any earlier registration of that name.

    Detectron2 refuses to register a name twice and to change a metadata field, so a name that is already known (for
    example Detectron2's own ``cityscapes_fine_panoptic_*``, or ours after a module reload) is removed from both
    catalogs first.
    """
    unregister(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)
    return MetadataCatalog.get(name)


def panoptic_split_metadata(
    class_meta, *, image_root, panoptic_root, panoptic_json, evaluator_type, ignore_label=255, label_divisor=1000,
    **files
):
    """The metadata dict of one panoptic split: ``class_meta`` (class names / colors / id maps) plus the locations
    ``panoptic_root``, ``image_root``, ``panoptic_json`` and any further ``files`` fields (e.g. ``sem_seg_root``,
    ``json_file``, ``gt_dir``), ``evaluator_type``, ``ignore_label`` and ``label_divisor``."""
    return dict(
        class_meta,
        panoptic_root=panoptic_root,
        image_root=image_root,
        panoptic_json=panoptic_json,
        **files,
        evaluator_type=evaluator_type,
        ignore_label=ignore_label,
        label_divisor=label_divisor,
    )


# --------------------------------------------------------------------------------------------------------------
# categories -> metadata


def _default_color(category_id):
    rng = random.Random(int(category_id) * 7919 + 17)
    return [rng.randint(0, 255) for _ in range(3)]


def validate_categories(categories, source="categories"):
    """Check a list of ``{"id", "name", "isthing", optional "color"}`` dicts; return normalized copies.

    Raises ValueError naming the offending entry for: a non-list, an entry that is not a dict, a missing or non-int
    id (bools are rejected), a missing or empty name, a missing isthing or one that is not 0/1/True/False, a duplicate
    id, or a color that is not three ints in 0..255. Missing colors get a fixed pseudo-random color.
    """
    if not isinstance(categories, (list, tuple)) or len(categories) == 0:
        raise ValueError(f"{source}: expected a non-empty list of category dicts, got {categories!r:.200}")
    seen = {}
    out = []
    for i, cat in enumerate(categories):
        where = f"{source}[{i}]"
        if not isinstance(cat, dict):
            raise ValueError(f"{where}: expected a dict with 'id', 'name' and 'isthing', got {cat!r:.200}")
        if "id" not in cat:
            raise ValueError(f"{where} ({cat.get('name', '?')!r}) has no 'id'")
        cid = cat["id"]
        if isinstance(cid, bool) or not isinstance(cid, int):
            raise ValueError(f"{where} ({cat.get('name', '?')!r}): category id {cid!r} is not an int")
        name = cat.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where} (id {cid}) has no 'name' (a non-empty string)")
        if "isthing" not in cat:
            raise ValueError(f"{where} (id {cid}, {name!r}) has no 'isthing' (1 for things, 0 for stuff)")
        isthing = cat["isthing"]
        if isthing not in (0, 1) or not isinstance(isthing, (int, bool)):
            raise ValueError(f"{where} (id {cid}, {name!r}): isthing must be 0/1 or a bool, got {isthing!r}")
        if cid in seen:
            raise ValueError(
                f"{source}: duplicate category id {cid}: {seen[cid]!r} (entry {list(seen).index(cid)}) "
                f"and {name!r} (entry {i})"
            )
        seen[cid] = name
        color = cat.get("color")
        if color is None:
            color = _default_color(cid)
        elif (
            not isinstance(color, (list, tuple))
            or len(color) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
        ):
            raise ValueError(f"{where} (id {cid}, {name!r}): color must be three ints in 0..255, got {color!r}")
        out.append({"id": cid, "name": name, "isthing": int(bool(isthing)), "color": list(color)})
    return out


def build_panoptic_metadata(categories, source="categories"):
    """Class metadata for a panoptic dataset whose contiguous ids follow the order of ``categories``.

    Returns thing_classes / thing_colors (things only, in contiguous order), stuff_classes / stuff_colors (ALL
    categories), thing_dataset_id_to_contiguous_id (things) and stuff_dataset_id_to_contiguous_id (all categories, so
    the semantic evaluator can map every class).
    """
    cats = validate_categories(categories, source)
    return {
        "thing_classes": [c["name"] for c in cats if c["isthing"]],
        "thing_colors": [c["color"] for c in cats if c["isthing"]],
        "stuff_classes": [c["name"] for c in cats],
        "stuff_colors": [c["color"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats) if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }


def _read_json(path, what, hint=""):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist." + (f" {hint}" if hint else ""))
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from e


# --------------------------------------------------------------------------------------------------------------
# loaders


def load_panoptic_json(
    json_file,
    image_root,
    panoptic_root,
    sem_seg_root,
    thing_dataset_id_to_contiguous_id,
    stuff_dataset_id_to_contiguous_id,
    *,
    image_ext=".jpg",
    check_images=True,
    hint="",
):
    """Read a COCO-format panoptic json into Detectron2 dicts.

    Each record has ``file_name`` (the image: the json's ``images[*].file_name`` for that image id, else the
    annotation's stem + ``image_ext``, under ``image_root``), ``image_id``, ``pan_seg_file_name`` (under
    ``panoptic_root``), ``sem_seg_file_name`` (stem + ".png" under ``sem_seg_root``, when that is given),
    ``height``/``width`` when the json has them, and ``segments_info`` whose ``category_id`` is converted to the
    contiguous id and which gets ``isthing``. Thing ids are looked up first, so a stuff map that lists every class (for
    semantic evaluation) is fine.

    Raises FileNotFoundError for a missing json or (with ``check_images``) a missing image, and ValueError for a
    segment whose category id the metadata does not know; the messages name the file and the id.
    """
    data = _read_json(json_file, "Panoptic annotation json", hint)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"Panoptic annotation json {json_file} has no 'annotations' list.")
    images = {img["id"]: img for img in data.get("images", []) if isinstance(img, dict) and "id" in img}
    n_classes = len(set(thing_dataset_id_to_contiguous_id) | set(stuff_dataset_id_to_contiguous_id))
    records = []
    for index, ann in enumerate(data["annotations"]):
        _check_panoptic_annotation(ann, index, json_file)
        pan_name = ann["file_name"]
        stem = os.path.splitext(pan_name)[0]
        image_id = ann["image_id"]
        img = images.get(image_id)
        image_name = img["file_name"] if img is not None and "file_name" in img else stem + image_ext
        image_file = os.path.join(image_root, image_name)
        if check_images and not os.path.isfile(image_file):
            raise FileNotFoundError(
                f"Image {image_file} (image id {image_id!r}, annotation {pan_name}) referenced by {json_file} "
                "does not exist."
            )
        segments = []
        for seg in ann.get("segments_info", []):
            seg = dict(seg)
            cid = seg.get("category_id")
            if cid in thing_dataset_id_to_contiguous_id:
                seg["category_id"] = thing_dataset_id_to_contiguous_id[cid]
                seg["isthing"] = True
            elif cid in stuff_dataset_id_to_contiguous_id:
                seg["category_id"] = stuff_dataset_id_to_contiguous_id[cid]
                seg["isthing"] = False
            else:
                raise ValueError(
                    f"{json_file}: annotation {pan_name} (image id {image_id!r}) has segment {seg.get('id')} with "
                    f"category id {cid!r}, which is not one of the {n_classes} categories in the dataset metadata."
                )
            segments.append(seg)
        rec = {
            "file_name": image_file,
            "image_id": image_id,
            "pan_seg_file_name": os.path.join(panoptic_root, pan_name),
            "segments_info": segments,
        }
        if sem_seg_root is not None:
            rec["sem_seg_file_name"] = os.path.join(sem_seg_root, stem + ".png")
        if img is not None and "height" in img and "width" in img:
            rec["height"], rec["width"] = int(img["height"]), int(img["width"])
        records.append(rec)
    if not records:
        raise ValueError(f"Panoptic annotation json {json_file} lists no annotations.")
    logger.info("Loaded %d images with panoptic annotations from %s", len(records), json_file)
    return records


def _check_panoptic_annotation(ann, index, json_file):
    """ValueError naming the json, the annotation and the missing key for a malformed panoptic annotation."""
    where = f"{json_file}: annotations[{index}]"
    if not isinstance(ann, dict):
        raise ValueError(f"{where} is not a dict (got {type(ann).__name__})")
    for key in ("file_name", "image_id"):
        if key not in ann:
            raise ValueError(f"{where} has no {key!r} (a COCO panoptic annotation needs 'image_id', 'file_name' and "
                             "'segments_info')")
    where = f"{json_file}: annotation {ann['file_name']} (image id {ann['image_id']!r})"
    segments = ann.get("segments_info", [])
    if not isinstance(segments, list):
        raise ValueError(f"{where}: 'segments_info' is not a list")
    for i, seg in enumerate(segments):
        if not isinstance(seg, dict) or "id" not in seg or "category_id" not in seg:
            raise ValueError(f"{where}: segments_info[{i}] = {seg!r:.100} lacks 'id' or 'category_id'")


def load_instance_json(json_file, image_root, thing_dataset_id_to_contiguous_id, hint=""):
    """Load a COCO instances json with Detectron2's ``load_coco_json`` and map category ids with the given map.

    Unlike ``load_coco_json(..., dataset_name)``, the json's category names are not written into the metadata, so a
    json whose names are worded differently (but whose ids agree) loads; an id the map does not know raises ValueError.
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"Instance annotation json {json_file} does not exist." + (f" {hint}" if hint else ""))
    records = load_coco_json(json_file, image_root)
    for rec in records:
        for obj in rec.get("annotations", []):
            cid = obj["category_id"]
            if cid not in thing_dataset_id_to_contiguous_id:
                raise ValueError(
                    f"{json_file}: image {rec['file_name']} has an annotation with category id {cid!r}, which is not "
                    f"one of the {len(thing_dataset_id_to_contiguous_id)} thing categories in the dataset metadata."
                )
            obj["category_id"] = thing_dataset_id_to_contiguous_id[cid]
    return records


# --------------------------------------------------------------------------------------------------------------
# user-facing registration


def register_panoptic_dataset(
    name,
    *,
    image_root,
    panoptic_root,
    panoptic_json,
    categories=None,
    sem_seg_root=None,
    instance_json=None,
    evaluator_type="coco_panoptic_seg",
    ignore_label=255,
    label_divisor=1000,
    image_ext=".jpg",
):
    """Register a panoptic dataset in COCO panoptic format with complete OneFormer metadata.

    Args:
        name: dataset name to use in ``DATASETS.TRAIN`` / ``DATASETS.TEST_*``.
        image_root: folder with the images (``images[*].file_name`` of the json, else annotation stem + ``image_ext``).
        panoptic_root: folder with the RGB panoptic PNGs (``annotations[*].file_name``).
        panoptic_json: the panoptic json.
        categories: list of ``{"id": int, "name": str, "isthing": 0/1, "color": [r, g, b] (optional)}`` in the
            order that defines contiguous ids; None reads the json's ``categories`` (the json must then exist now).
        sem_seg_root: folder with semantic PNGs (annotation stem + ".png", contiguous ids, ``ignore_label`` = void).
            Needed by the unified training mapper and semantic evaluation; without it records carry no
            ``sem_seg_file_name``.
        instance_json: COCO instances json for instance evaluation (stored as metadata ``json_file``), e.g. written by
            ``datasets/panoptic2detection_coco_format.py --things-only``. Records do not carry its annotations.
        evaluator_type: "coco_panoptic_seg" (panoptic + COCO instance + semantic), "ade20k_panoptic_seg" (same, with an
            instance evaluator that accepts thing ids that are not 0..T-1), "mapillary_vistas_panoptic_seg", ...
        ignore_label: value of void pixels in the semantic PNGs.
        label_divisor: panoptic label divisor used at inference.

    Returns the dataset's Metadata. Raises ValueError for malformed categories (duplicate or non-int ids, missing
    name/isthing), FileNotFoundError when ``categories`` is None and the json is missing.
    """
    if categories is None:
        data = _read_json(panoptic_json, "Panoptic annotation json", "Pass categories=[...] or create the json first.")
        if not isinstance(data, dict) or "categories" not in data:
            raise ValueError(f"Panoptic annotation json {panoptic_json} has no 'categories'; pass categories=[...].")
        categories = data["categories"]
        source = f"{panoptic_json} 'categories'"
    else:
        source = f"categories of dataset {name!r}"
    class_meta = build_panoptic_metadata(categories, source)
    if evaluator_type not in KNOWN_EVALUATOR_TYPES:
        logger.warning("Dataset %s: evaluator_type %r is not one OneFormer knows (%s).", name, evaluator_type,
                       ", ".join(KNOWN_EVALUATOR_TYPES))
    thing_contiguous = sorted(class_meta["thing_dataset_id_to_contiguous_id"].values())
    if (
        evaluator_type == "coco_panoptic_seg"
        and instance_json is not None
        and thing_contiguous != list(range(len(thing_contiguous)))
    ):
        logger.warning(
            "Dataset %s: the COCO instance evaluator needs thing contiguous ids 0..%d, but things are interleaved with "
            "stuff (%s...). List things first in `categories` or use evaluator_type='ade20k_panoptic_seg'.",
            name, len(thing_contiguous) - 1, thing_contiguous[:5],
        )
    if sem_seg_root is None:
        logger.warning("Dataset %s has no sem_seg_root: records carry no sem_seg_file_name, which the unified "
                       "training mapper and semantic evaluation need.", name)
    tmap = dict(class_meta["thing_dataset_id_to_contiguous_id"])
    smap = dict(class_meta["stuff_dataset_id_to_contiguous_id"])

    def _load():
        return load_panoptic_json(panoptic_json, image_root, panoptic_root, sem_seg_root, tmap, smap,
                                  image_ext=image_ext)

    metadata = panoptic_split_metadata(
        class_meta,
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        json_file=instance_json,
        evaluator_type=evaluator_type,
        ignore_label=ignore_label,
        label_divisor=label_divisor,
    )
    if sem_seg_root is not None:
        metadata["sem_seg_root"] = sem_seg_root
    return register_or_replace(name, _load, metadata)


def register_semantic_dataset(
    name,
    *,
    image_root,
    sem_seg_root,
    stuff_classes,
    stuff_colors=None,
    ignore_label=255,
    image_ext="jpg",
    gt_ext="png",
    evaluator_type="sem_seg",
):
    """Register a semantic-only dataset: images and label PNGs matched by relative path without extension.

    Label PNG values are contiguous ids into ``stuff_classes``; ``ignore_label`` marks void. Uses Detectron2's
    ``load_sem_seg``. Returns the Metadata.
    """
    stuff_classes = list(stuff_classes)
    if not stuff_classes or not all(isinstance(c, str) and c for c in stuff_classes):
        raise ValueError(f"Dataset {name!r}: stuff_classes must be a non-empty list of names")
    if stuff_colors is None:
        stuff_colors = [_default_color(i) for i in range(len(stuff_classes))]
    if len(stuff_colors) != len(stuff_classes):
        raise ValueError(f"Dataset {name!r}: {len(stuff_colors)} colors for {len(stuff_classes)} classes")
    if 0 <= ignore_label < len(stuff_classes):
        raise ValueError(f"Dataset {name!r}: ignore_label {ignore_label} is a class id (0..{len(stuff_classes) - 1})")

    def _load():
        for what, d in (("Image folder", image_root), ("Semantic label folder", sem_seg_root)):
            if not os.path.isdir(d):
                raise FileNotFoundError(f"{what} {d} of dataset {name!r} does not exist.")
        return load_sem_seg(sem_seg_root, image_root, gt_ext=gt_ext, image_ext=image_ext)

    metadata = dict(
        stuff_classes=stuff_classes,
        stuff_colors=[list(c) for c in stuff_colors],
        image_root=image_root,
        sem_seg_root=sem_seg_root,
        evaluator_type=evaluator_type,
        ignore_label=ignore_label,
    )
    return register_or_replace(name, _load, metadata)


def register_instance_dataset(name, *, image_root, json_file, categories=None):
    """Register an instance-only dataset from a COCO instances json (``evaluator_type`` "coco").

    ``categories`` (``{"id", "name", optional "color"}``; ``isthing`` is implied) defaults to the json's
    ``categories`` sorted by id; contiguous ids follow that order. Uses Detectron2's ``register_coco_instances`` for the
    metadata, with a loader that maps category ids through that fixed map (so json names may be worded differently).
    """
    if categories is None:
        data = _read_json(json_file, "Instance annotation json", "Pass categories=[...] or create the json first.")
        categories = sorted(data.get("categories", []), key=lambda c: c.get("id", 0) if isinstance(c, dict) else 0)
        source = f"{json_file} 'categories'"
    else:
        source = f"categories of dataset {name!r}"
    categories = [dict(c, isthing=c.get("isthing", 1)) if isinstance(c, dict) else c for c in categories]
    cats = validate_categories(categories, source)
    if not all(c["isthing"] for c in cats):
        raise ValueError(f"{source}: an instance dataset has only thing categories (isthing 1)")
    metadata = {
        "thing_classes": [c["name"] for c in cats],
        "thing_colors": [c["color"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }
    return _register_coco_instances_with_fixed_ids(name, metadata, json_file, image_root)


def _register_coco_instances_with_fixed_ids(name, metadata, json_file, image_root, hint=""):
    """``register_coco_instances`` (metadata: json_file, image_root, evaluator_type "coco", ...), then its loader is
    swapped for ``load_instance_json`` so that the json's category names never overwrite ``thing_classes``."""
    unregister(name)
    register_coco_instances(name, metadata, json_file, image_root)
    thing_map = dict(metadata["thing_dataset_id_to_contiguous_id"])
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_instance_json(json_file, image_root, thing_map, hint))
    return MetadataCatalog.get(name)
