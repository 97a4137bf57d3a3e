#!/usr/bin/env python3
"""Check a dataset before training: metadata, category ids, thing/stuff flags and the annotation files.

    python tools/validate_dataset.py ade20k_panoptic_val coco_2017_val_panoptic_with_sem_seg --max-images 200
    python tools/validate_dataset.py --config-file configs/ade20k/oneformer_R50_bs16_160k.yaml   # its datasets
    python tools/validate_dataset.py --panoptic-json my/panoptic.json --panoptic-root my/panoptic --image-root my/images
    python tools/validate_dataset.py my_dataset --import my_project.register_my_data

Registered names are loaded through the DatasetCatalog (``import oneformer`` registers the built-ins; ``--import``
imports modules that register your own). Unregistered files are checked against the categories of their own json.

Reported, in plain words:
  * metadata fields that the mappers, model or evaluators need but the dataset lacks;
  * contiguous ids that are not 0..K-1, K not matching MODEL.SEM_SEG_HEAD.NUM_CLASSES of ``--config-file``;
  * thing/stuff inconsistencies: thing_classes not the thing names of stuff_classes in contiguous order, a class
    marked thing in the json / segments_info but stuff in the metadata (or the other way round);
  * category ids in the annotations that the metadata does not know;
  * missing image, panoptic PNG and semantic PNG files; PNG/image size mismatches; semantic values out of range;
  * PNG segment ids (R + 256·G + 256²·B) missing from segments_info and segments_info ids missing from the PNG;
  * images without any segment and images whose segments are all crowd (warnings);
  * a panoptic dataset without instance annotations (metadata json_file): instance evaluation will be skipped
    (a warning naming the fix; none when ``--config-file`` sets MODEL.TEST.INSTANCE_ON False).

Exit code 0 when nothing is reported (warnings allowed with ``--allow-warnings``), 1 otherwise.
"""
import argparse
import difflib
import json
import os
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np
from panopticapi.utils import rgb2id

PANOPTIC_EVALUATORS = (
    "coco_panoptic_seg",
    "ade20k_panoptic_seg",
    "cityscapes_panoptic_seg",
    "mapillary_vistas_panoptic_seg",
)
SEMANTIC_EVALUATORS = ("sem_seg", "cityscapes_sem_seg")
INSTANCE_EVALUATORS = ("coco", "cityscapes_instance")

REQUIRED = {
    "panoptic": (
        "thing_classes",
        "stuff_classes",
        "thing_dataset_id_to_contiguous_id",
        "stuff_dataset_id_to_contiguous_id",
        "ignore_label",
        "label_divisor",
        "evaluator_type",
        "panoptic_root",
        "panoptic_json",
        "image_root",
    ),
    "semantic": ("stuff_classes", "ignore_label", "evaluator_type"),
    "instance": ("thing_classes", "thing_dataset_id_to_contiguous_id", "evaluator_type"),
}
RECOMMENDED = {
    "panoptic": ("thing_colors", "stuff_colors"),
    "semantic": ("stuff_colors",),
    "instance": ("thing_colors",),
}
MAX_SHOWN = 10  # messages shown per kind of problem


class Report:
    """Findings of one dataset, grouped by kind."""

    def __init__(self, name):
        self.name = name
        self.items = OrderedDict()  # (severity, kind) -> [messages]
        self.notes = []

    def error(self, kind, message):
        self.items.setdefault(("ERROR", kind), []).append(message)

    def warning(self, kind, message):
        self.items.setdefault(("WARNING", kind), []).append(message)

    def count(self, severity):
        return sum(len(v) for (s, _), v in self.items.items() if s == severity)

    @property
    def errors(self):
        return self.count("ERROR")

    @property
    def warnings(self):
        return self.count("WARNING")

    def messages(self):
        return [m for v in self.items.values() for m in v]

    def render(self, max_shown=MAX_SHOWN):
        lines = [f"== {self.name}"] + [f"   {n}" for n in self.notes]
        for (severity, kind), msgs in self.items.items():
            for m in msgs[:max_shown]:
                lines.append(f"   {severity:<7} {m}")
            if len(msgs) > max_shown:
                lines.append(f"   {severity:<7} ... and {len(msgs) - max_shown} more of this kind ({kind})")
        if not self.items:
            lines.append("   OK: no problems found")
        else:
            lines.append(f"   {self.errors} error(s), {self.warnings} warning(s)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------------
# helpers


def dataset_kind(meta):
    ev = meta.get("evaluator_type")
    if ev in PANOPTIC_EVALUATORS or meta.get("panoptic_json") is not None:
        return "panoptic"
    if ev in SEMANTIC_EVALUATORS:
        return "semantic"
    if ev in INSTANCE_EVALUATORS:
        return "instance"
    if meta.get("stuff_classes") is not None and meta.get("thing_classes") is None:
        return "semantic"
    return "instance" if meta.get("thing_classes") is not None else None


def _class_name(meta, contiguous):
    names = meta.get("stuff_classes") or []
    if isinstance(contiguous, int) and 0 <= contiguous < len(names):
        return repr(names[contiguous])
    return "?"


def _image_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size  # (w, h)


def _read_png(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


# ------------------------------------------------------------------------------------------------------------------
# metadata checks


def check_metadata(meta, report, num_classes=None, instance_on=True):
    """Check fields and id spaces; returns the kind ("panoptic", "semantic", "instance") or None. ``instance_on``
    (MODEL.TEST.INSTANCE_ON): whether instance evaluation will run, i.e. needs instance annotations."""
    kind = dataset_kind(meta)
    if kind is None:
        report.error("metadata", "metadata has neither evaluator_type nor thing_classes/stuff_classes: the dataset "
                                 "type cannot be told, so the model cannot be built for it")
        return None
    ev = meta.get("evaluator_type")
    required = list(REQUIRED[kind])
    if kind == "panoptic" and ev in ("coco_panoptic_seg", "ade20k_panoptic_seg") and meta.get("json_file") is None \
            and instance_on:
        from oneformer.evaluation.build import NO_INSTANCE_JSON_FIX

        # training works; evaluation skips AP (oneformer/evaluation/build.py)
        report.warning("no-instance-json", "metadata field 'json_file' (instance annotations) is missing: instance "
                                           f"evaluation (AP) will be skipped; {NO_INSTANCE_JSON_FIX}")
    if ev == "coco":
        required.append("json_file")
    if ev in ("cityscapes_instance", "cityscapes_sem_seg"):
        # Detectron2's Cityscapes evaluators read the ground truth from gt_dir and need no id maps
        required = [k for k in required if k != "thing_dataset_id_to_contiguous_id"] + ["gt_dir"]
    for key in required:
        if meta.get(key) is None:
            report.error("missing-field", f"metadata field '{key}' is missing (needed for {kind} datasets"
                                          f"{' with evaluator ' + ev if ev else ''})")
    missing_colors = [key for key in RECOMMENDED[kind] if meta.get(key) is None]
    if missing_colors:
        report.notes.append(f"note: no {' / '.join(missing_colors)} (visualization picks colors itself)")

    thing_classes = meta.get("thing_classes")
    stuff_classes = meta.get("stuff_classes")
    tmap = meta.get("thing_dataset_id_to_contiguous_id") or {}
    smap = meta.get("stuff_dataset_id_to_contiguous_id") or {}
    ignore = meta.get("ignore_label")

    for key, names in (("thing", thing_classes), ("stuff", stuff_classes)):
        colors = meta.get(f"{key}_colors")
        if names is not None and colors is not None and len(colors) != len(names):
            report.error("metadata", f"{key}_colors has {len(colors)} entries but {key}_classes has {len(names)}")

    if kind in ("panoptic", "semantic") and stuff_classes is not None:
        k = len(stuff_classes)
        if isinstance(ignore, int) and 0 <= ignore < k:
            report.error("metadata", f"ignore_label {ignore} is also a class id (classes are 0..{k - 1}): "
                                     f"{stuff_classes[ignore]!r} would never be learned")
        if num_classes is not None and num_classes != k:
            report.error("num-classes", f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes} but the dataset has {k} "
                                        "classes (len(stuff_classes))")
    if kind == "panoptic" and stuff_classes is not None:
        k = len(stuff_classes)
        contiguous = set(tmap.values()) | set(smap.values())
        if contiguous != set(range(k)):
            missing = sorted(set(range(k)) - contiguous)
            extra = sorted(contiguous - set(range(k)), key=str)
            report.error("contiguous-ids", f"contiguous ids are not exactly 0..{k - 1} (len(stuff_classes)): "
                                           f"missing {missing[:20]}, unexpected {extra[:20]}")
        for did in set(tmap) & set(smap):
            if tmap[did] != smap[did]:
                report.error("contiguous-ids", f"dataset id {did} maps to contiguous {tmap[did]} as a thing but to "
                                               f"{smap[did]} as stuff")
        if thing_classes is not None and list(thing_classes) != list(stuff_classes):
            thing_contiguous = sorted(v for v in set(tmap.values()) if isinstance(v, int))
            if len(thing_classes) != len(thing_contiguous):
                report.error("thing-stuff", f"thing_classes has {len(thing_classes)} names but "
                                            f"thing_dataset_id_to_contiguous_id has {len(thing_contiguous)} classes")
            else:
                bad = [(j, c) for j, c in enumerate(thing_contiguous)
                       if not (0 <= c < k) or thing_classes[j] != stuff_classes[c]]
                for j, c in bad[:MAX_SHOWN]:
                    report.error("thing-stuff", f"thing_classes[{j}] is {thing_classes[j]!r} but the thing with "
                                                f"contiguous id {c} is {_class_name(meta, c)} in stuff_classes "
                                                "(thing_classes must list the thing names in contiguous-id order)")
    if kind == "instance" and thing_classes is not None and tmap:
        values = sorted(tmap.values())
        if values != list(range(len(thing_classes))):
            report.error("contiguous-ids", f"thing contiguous ids are not 0..{len(thing_classes) - 1} "
                                           f"(len(thing_classes)); got {values[:20]}")
    return kind


# ------------------------------------------------------------------------------------------------------------------
# panoptic json checks (they see every annotation, even when the registered loader stops at the first problem)


def check_panoptic_json(data, json_file, meta, report):
    tmap = meta.get("thing_dataset_id_to_contiguous_id") or {}
    smap = meta.get("stuff_dataset_id_to_contiguous_id") or {}
    names = {}
    for cat in data.get("categories", []):
        cid, name = cat.get("id"), cat.get("name")
        names[cid] = name
        if cid not in tmap and cid not in smap:
            report.error("unknown-category", f"category id {cid} ({name!r}) of the json categories is not in the "
                                             "metadata")
            continue
        if "isthing" in cat and bool(cat["isthing"]) != (cid in tmap):
            in_json, in_meta = ("thing", "stuff") if cat["isthing"] else ("stuff", "thing")
            report.error("thing-stuff", f"class {name!r} (id {cid}) is marked {in_json} in {json_file} but "
                                        f"{in_meta} in the metadata")
    unknown = defaultdict(list)
    for ann in data.get("annotations", []):
        for seg in ann.get("segments_info", []):
            cid = seg.get("category_id")
            if cid not in tmap and cid not in smap:
                unknown[cid].append(f"segment {seg.get('id')} of {ann.get('file_name')}")
    for cid, where in unknown.items():
        label = f" ({names[cid]!r} in the json)" if cid in names else ""
        report.error("unknown-category", f"category id {cid}{label} is not in the metadata: used by {len(where)} "
                                         f"segment(s), e.g. {', '.join(where[:3])}")


def records_from_panoptic_json(data, meta, image_root, panoptic_root, sem_seg_root=None, image_ext=".jpg"):
    """Records like the registered loaders build, without raising: unknown category ids get category_id None."""
    tmap = meta.get("thing_dataset_id_to_contiguous_id") or {}
    smap = meta.get("stuff_dataset_id_to_contiguous_id") or {}
    images = {img.get("id"): img for img in data.get("images", [])}
    records = []
    for ann in data.get("annotations", []):
        stem = os.path.splitext(ann["file_name"])[0]
        img = images.get(ann.get("image_id"), {})
        segments = []
        for seg in ann.get("segments_info", []):
            seg = dict(seg)
            cid = seg.get("category_id")
            seg["dataset_category_id"] = cid
            seg["isthing"] = cid in tmap
            seg["category_id"] = tmap.get(cid, smap.get(cid))
            segments.append(seg)
        rec = {
            "file_name": os.path.join(image_root, img.get("file_name", stem + image_ext)),
            "image_id": ann.get("image_id"),
            "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
            "segments_info": segments,
        }
        if sem_seg_root:
            rec["sem_seg_file_name"] = os.path.join(sem_seg_root, stem + ".png")
        records.append(rec)
    return records


# ------------------------------------------------------------------------------------------------------------------
# record checks


def _check_sem_png(path, k, ignore, report, shape=None):
    if not os.path.isfile(path):
        report.error("missing-file", f"semantic PNG {path} is missing")
        return
    sem = _read_png(path)
    if sem.ndim != 2:
        report.error("semantic-png", f"semantic PNG {path} has {sem.shape[-1]} channels; expected one")
        return
    if shape is not None and sem.shape != shape:
        report.error("size", f"semantic PNG {path} is {sem.shape[1]}x{sem.shape[0]} but the image is "
                             f"{shape[1]}x{shape[0]}")
    if k is not None:
        values = np.unique(sem)
        bad = [int(v) for v in values if not (v < k or v == ignore)]
        if bad:
            report.error("semantic-png", f"semantic PNG {path} has values {bad[:10]} outside 0..{k - 1} and the "
                                         f"ignore label {ignore}")


def check_records(records, meta, kind, report, max_images=None):
    stuff_classes = meta.get("stuff_classes")
    thing_classes = meta.get("thing_classes")
    tmap = meta.get("thing_dataset_id_to_contiguous_id") or {}
    thing_contiguous = set(tmap.values())
    ignore = meta.get("ignore_label")
    k = len(stuff_classes) if stuff_classes is not None else None
    if not records:
        report.error("empty", "the dataset has no images")
        return 0
    subset = records if max_images is None else records[:max_images]
    no_annotations = []
    for rec in subset:
        image = rec.get("file_name")
        shape = None
        if not image or not os.path.isfile(image):
            report.error("missing-file", f"image file {image} is missing")
        else:
            try:
                w, h = _image_size(image)
                shape = (h, w)
            except Exception as e:  # noqa: BLE001
                report.error("bad-file", f"image file {image} cannot be read: {e}")
            if shape and "height" in rec and "width" in rec and (rec["height"], rec["width"]) != shape:
                report.error("size", f"image {image} is {shape[1]}x{shape[0]} but its record says "
                                     f"{rec['width']}x{rec['height']}")
        if kind == "panoptic":
            _check_panoptic_record(rec, meta, k, thing_contiguous, shape, report)
        if kind in ("panoptic", "semantic") and rec.get("sem_seg_file_name"):
            _check_sem_png(rec["sem_seg_file_name"], k, ignore, report, shape)
        elif kind == "semantic":
            report.error("missing-field", f"record of {image} has no sem_seg_file_name")
        if kind == "instance" or "annotations" in rec:
            anns = rec.get("annotations", [])
            n = len(thing_classes) if thing_classes is not None else None
            for obj in anns:
                cid = obj.get("category_id")
                if n is not None and not (isinstance(cid, int) and 0 <= cid < n):
                    report.error("unknown-category", f"instance annotation of {image} has category id {cid}, "
                                                     f"outside 0..{n - 1} (thing_classes)")
            if kind == "instance":
                if not anns:
                    no_annotations.append(image)
                elif all(obj.get("iscrowd", 0) for obj in anns):
                    report.warning("crowd-only", f"image {image} has only crowd instances ({len(anns)})")
    if no_annotations:
        report.warning("no-segment", f"{len(no_annotations)} image(s) have no instance annotation, e.g. "
                                     f"{', '.join(map(str, no_annotations[:3]))}")
    return len(subset)


def _check_panoptic_record(rec, meta, k, thing_contiguous, shape, report):
    image = rec.get("file_name")
    segments = rec.get("segments_info")
    pan_file = rec.get("pan_seg_file_name")
    if segments is None or pan_file is None:
        report.error("missing-field", f"record of {image} lacks segments_info / pan_seg_file_name")
        return
    label = os.path.basename(pan_file)
    for seg in segments:
        c = seg.get("category_id")
        if c is None:
            continue  # unknown dataset id: reported by the json check
        if k is not None and not (isinstance(c, int) and 0 <= c < k):
            report.error("unknown-category", f"segment {seg.get('id')} of {label} has contiguous category id {c}, "
                                             f"outside 0..{k - 1}")
            continue
        if "isthing" in seg and bool(seg["isthing"]) != (c in thing_contiguous):
            in_rec, in_meta = ("thing", "stuff") if seg["isthing"] else ("stuff", "thing")
            report.error("thing-stuff", f"class {_class_name(meta, c)} is marked {in_rec} in segments_info of "
                                        f"{label} but {in_meta} in the metadata")
    if not segments:
        report.warning("no-segment", f"image {image} has no segment")
    elif all(seg.get("iscrowd", 0) for seg in segments):
        report.warning("crowd-only", f"image {image} has only crowd segments ({len(segments)})")
    ids = [seg.get("id") for seg in segments]
    dup = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if dup:
        report.error("segment-ids", f"{label}: segment ids {dup} appear more than once in segments_info")
    if not os.path.isfile(pan_file):
        report.error("missing-file", f"panoptic PNG {pan_file} is missing")
        return
    png = _read_png(pan_file)
    if png.ndim != 3 or png.shape[2] < 3:
        report.error("panoptic-png", f"panoptic PNG {pan_file} is not an RGB image (shape {png.shape})")
        return
    pan = rgb2id(png[..., :3])
    if shape is not None and pan.shape != shape:
        report.error("size", f"panoptic PNG {pan_file} is {pan.shape[1]}x{pan.shape[0]} but the image is "
                             f"{shape[1]}x{shape[0]}")
    present, counts = np.unique(pan, return_counts=True)
    present = {int(i): int(n) for i, n in zip(present, counts) if i != 0}
    listed = {seg.get("id"): seg for seg in segments}
    for sid, n in present.items():
        if sid not in listed:
            report.error("png-not-in-json", f"panoptic PNG {pan_file} contains segment id {sid} ({n} pixels) that is "
                                            "not in segments_info")
    for sid, seg in listed.items():
        if sid not in present:
            cat = seg.get("dataset_category_id", seg.get("category_id"))
            name = _class_name(meta, seg.get("category_id"))
            report.error("json-not-in-png", f"segment id {sid} (category {cat}, {name}) of {label} is in "
                                            "segments_info but not in the PNG")


# ------------------------------------------------------------------------------------------------------------------
# drivers


def validate_registered(name, num_classes=None, max_images=None, instance_on=True):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    report = Report(name)
    if name not in DatasetCatalog.list():
        close = difflib.get_close_matches(name, DatasetCatalog.list(), n=3)
        report.error("unknown-dataset", f"dataset {name!r} is not registered"
                                        + (f"; did you mean {', '.join(close)}?" if close else ""))
        return report
    meta = MetadataCatalog.get(name).as_dict()
    kind = check_metadata(meta, report, num_classes, instance_on)
    report.notes.insert(0, f"type: {kind or 'unknown'}, evaluator_type: {meta.get('evaluator_type')}, "
                        f"classes: {len(meta.get('stuff_classes') or meta.get('thing_classes') or [])}")
    data = None
    json_file = meta.get("panoptic_json")
    if kind == "panoptic" and json_file:
        if not os.path.isfile(json_file):
            report.error("missing-file", f"panoptic json {json_file} is missing")
            return report  # the loader can only fail the same way
        try:
            with open(json_file) as f:
                data = json.load(f)
        except ValueError as e:
            report.error("bad-file", f"panoptic json {json_file} is not valid JSON: {e}")
            return report
        check_panoptic_json(data, json_file, meta, report)
    try:
        records = DatasetCatalog.get(name)
    except Exception as e:  # noqa: BLE001  (any loader failure is a finding)
        report.error("loader", f"loading the dataset fails: {type(e).__name__}: {e}")
        records = None
        if (data is not None and meta.get("evaluator_type") != "cityscapes_panoptic_seg"
                and meta.get("image_root") and meta.get("panoptic_root")):
            records = records_from_panoptic_json(data, meta, meta["image_root"], meta["panoptic_root"],
                                                 meta.get("sem_seg_root"))
            report.notes.append("records rebuilt from the json to list every problem")
    if records is not None and kind is not None:
        n = check_records(records, meta, kind, report, max_images)
        report.notes.append(f"images: {len(records)}, files checked for {n}")
    return report


def validate_files(panoptic_json, panoptic_root, image_root, sem_seg_root=None, num_classes=None, max_images=None):
    """Check unregistered COCO-format panoptic files against the json's own categories (in json order)."""
    here = Path(__file__).resolve().parents[1]
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    from oneformer.data.datasets.custom import build_panoptic_metadata

    report = Report(panoptic_json)
    for what, path, is_dir in (("panoptic json", panoptic_json, False), ("panoptic PNG folder", panoptic_root, True),
                               ("image folder", image_root, True)):
        if not (os.path.isdir(path) if is_dir else os.path.isfile(path)):
            report.error("missing-file", f"{what} {path} is missing")
    if report.errors:
        return report
    with open(panoptic_json) as f:
        data = json.load(f)
    try:
        meta = build_panoptic_metadata(data.get("categories", []), f"{panoptic_json} 'categories'")
    except ValueError as e:
        report.error("categories", str(e))
        return report
    meta.update(ignore_label=255, label_divisor=1000, evaluator_type="coco_panoptic_seg",
                panoptic_json=panoptic_json, panoptic_root=panoptic_root, image_root=image_root)
    report.notes.append(f"classes (json categories, in order): {len(meta['stuff_classes'])}, things: "
                        f"{len(meta['thing_classes'])}")
    if num_classes is not None and num_classes != len(meta["stuff_classes"]):
        report.error("num-classes", f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes} but the json has "
                                    f"{len(meta['stuff_classes'])} categories")
    check_panoptic_json(data, panoptic_json, meta, report)
    records = records_from_panoptic_json(data, meta, image_root, panoptic_root, sem_seg_root)
    n = check_records(records, meta, "panoptic", report, max_images)
    report.notes.append(f"images: {len(records)}, files checked for {n}")
    return report


def _load_config(config_file):
    from detectron2.config import get_cfg

    from oneformer import add_oneformer_config_all
    from oneformer.config import merge_config

    return merge_config(add_oneformer_config_all(get_cfg()), config_file)  # "configs/..." works from anywhere


def import_registering_module(spec):
    """Import what ``--import`` names: a module ("my_train", "my_project.data"), found in the current folder first,
    then on the Python path; or a .py file path ("../my_train.py"), imported under its stem (its folder goes on the
    path for its own imports). Raises SystemExit with one line when nothing of that name exists."""
    import importlib
    import importlib.util

    if spec.endswith(".py") or os.sep in spec:
        path = os.path.abspath(spec)
        if not os.path.isfile(path):
            raise SystemExit(f"validate_dataset.py: --import {spec}: no such file")
        sys.path.insert(0, os.path.dirname(path))
        name = os.path.splitext(os.path.basename(path))[0]
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:  # a script's folder (tools/) is on the path, the user's folder is not
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as e:
        if e.name != spec.split(".")[0]:
            raise  # the module exists; something it imports does not
        raise SystemExit(f"validate_dataset.py: --import {spec}: no module {spec!r} in the current folder "
                         f"({os.getcwd()}) or on the Python path; pass a path to the .py file instead") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="registered dataset names (default: those of --config-file)")
    parser.add_argument("--max-images", type=int, default=None, help="check the files of the first N images only")
    parser.add_argument("--config-file", help="compare class counts with its MODEL.SEM_SEG_HEAD.NUM_CLASSES")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE (a module name, looked up in the current folder first, or a .py file) "
                             "first, to register your own datasets; repeatable")
    parser.add_argument("--panoptic-json", help="check these unregistered files instead (with the two below)")
    parser.add_argument("--panoptic-root", help="panoptic PNG folder of --panoptic-json")
    parser.add_argument("--image-root", help="image folder of --panoptic-json")
    parser.add_argument("--sem-seg-root", help="semantic PNG folder of --panoptic-json (optional)")
    parser.add_argument("--allow-warnings", action="store_true", help="exit 0 when there are only warnings")
    args = parser.parse_args(argv)

    repo = str(Path(__file__).resolve().parents[1])
    if repo not in sys.path:
        sys.path.insert(0, repo)
    import warnings

    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script")  # any category: torch 2.11 and 2.14 differ
    import oneformer  # noqa: F401
    import oneformer.data.datasets  # noqa: F401  (registers the built-in datasets)

    for module in args.imports:
        import_registering_module(module)

    num_classes = None
    instance_on = True
    names = list(args.names)
    if args.config_file:
        cfg = _load_config(args.config_file)
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        instance_on = cfg.MODEL.TEST.INSTANCE_ON
        if not names and not args.panoptic_json:
            for key in ("TRAIN", "TEST_PANOPTIC", "TEST_INSTANCE", "TEST_SEMANTIC"):
                for n in cfg.DATASETS.get(key, ()):
                    if n and n not in names:
                        names.append(n)

    reports = []
    if args.panoptic_json or args.panoptic_root or args.image_root:
        if not (args.panoptic_json and args.panoptic_root and args.image_root):
            parser.error("--panoptic-json, --panoptic-root and --image-root go together")
        reports.append(validate_files(args.panoptic_json, args.panoptic_root, args.image_root, args.sem_seg_root,
                                      num_classes, args.max_images))
    if not names and not reports:
        parser.error("give dataset names, --config-file, or --panoptic-json/--panoptic-root/--image-root")
    for name in names:
        reports.append(validate_registered(name, num_classes, args.max_images, instance_on))

    for r in reports:
        print(r.render())
    errors = sum(r.errors for r in reports)
    warnings = sum(r.warnings for r in reports)
    bad = [r.name for r in reports if r.errors or (r.warnings and not args.allow_warnings)]
    print()
    if bad:
        print(f"FAILED: {errors} error(s) and {warnings} warning(s) in {len(bad)} of {len(reports)} dataset(s): "
              f"{', '.join(bad)}")
        return 1
    print(f"OK: {len(reports)} dataset(s) checked" + (f", {warnings} warning(s) allowed" if warnings else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
