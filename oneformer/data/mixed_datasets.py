"""Training on datasets of different kinds at once: panoptic, semantic-only and instance-only sources in
``DATASETS.TRAIN``, with per-dataset sampling weights and task probabilities.

Config (added by ``add_oneformer_engine_config``):

- ``DATASETS.TRAIN_SAMPLING_WEIGHTS`` (()): one weight per DATASETS.TRAIN entry: the share of training images drawn
  from it (normalized to sum 1). () = in proportion to the datasets' sizes (Detectron2's concatenation).
- ``DATASETS.TRAIN_TASK_PROBS`` (()): one ``(semantic, instance, panoptic)`` triple per entry, summing to 1: the
  probability of each task token for that source's images. () = by kind: a panoptic source uses INPUT.TASK_PROB
  (cumulative thresholds), a semantic-only source trains only the semantic task ``(1, 0, 0)``, an instance-only
  source only the instance task ``(0, 1, 0)``. A semantic-only source can train nothing else (it has no instances),
  an instance-only source nothing but instances (no stuff): other triples for them are refused.

The kind of a source is read from its records: ``pan_seg_file_name`` → panoptic, ``annotations`` → instance-only,
``sem_seg_file_name`` → semantic-only. All sources share one label space, the ``stuff_classes`` of the first source
that has them (the model's MODEL.SEM_SEG_HEAD.NUM_CLASSES classes): panoptic and semantic sources must list the same
classes; an instance-only source's ``thing_classes`` are matched to it by name (its category ids are remapped), and
each must be a thing there. Differences are refused with a message naming the dataset and the class.

``Trainer.build_train_loader`` uses ``build_mixed_train_loader`` when DATASETS.TRAIN mixes kinds or either key is
set; otherwise Detectron2's loader as before. Each source gets its own mapper (the panoptic one of
INPUT.DATASET_MAPPER_NAME, "oneformer_unified" unless it is "coco_unified_lsj"; "oneformer_semantic";
"oneformer_instance"), built in the shared label space; records carry ``dataset_source`` (index into DATASETS.TRAIN),
outputs also ``dataset_name``. Semantic and instance sources are augmented like "oneformer_unified"
(INPUT.MIN_SIZE_TRAIN, INPUT.CROP, ...; the instance one with a plain random crop), also when the panoptic sources
use COCO's LSJ. Sampling weights use Detectron2's ``RepeatFactorTrainingSampler``: every image of source d gets the
repeat factor ``w_d · N / N_d`` (N images in all), so a source's expected share of an epoch is w_d.
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import MetadataCatalog, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler

from .dataset_mappers.coco_unified_new_baseline_dataset_mapper import (
    COCOUnifiedNewBaselineDatasetMapper,
    build_lsj_augmentations,
)
from .dataset_mappers.instance_dataset_mapper import OneFormerInstanceDatasetMapper
from .dataset_mappers.oneformer_unified_dataset_mapper import (
    OneFormerUnifiedDatasetMapper,
    build_unified_augmentations,
    training_mapper_kwargs,
)
from .dataset_mappers.semantic_dataset_mapper import OneFormerSemanticDatasetMapper

__all__ = ["KINDS", "MixedDatasetMapper", "record_kind", "uses_mixed_loader", "task_probs_for",
           "sampling_repeat_factors", "build_mixed_train_loader", "load_sources"]

logger = logging.getLogger(__name__)

KINDS = ("panoptic", "semantic", "instance")
_ONLY = {"semantic": (1.0, 0.0, 0.0), "instance": (0.0, 1.0, 0.0)}


def record_kind(record: Dict) -> Optional[str]:
    """"panoptic" (a panoptic PNG), "instance" (COCO-style ``annotations``), "semantic" (a label PNG) or None."""
    if record.get("pan_seg_file_name"):
        return "panoptic"
    if "annotations" in record:
        return "instance"
    if record.get("sem_seg_file_name"):
        return "semantic"
    return None


def uses_mixed_loader(cfg) -> bool:
    """Whether sampling weights or task probabilities are set (the kinds are checked when the data are loaded)."""
    return bool(cfg.DATASETS.TRAIN_SAMPLING_WEIGHTS) or bool(cfg.DATASETS.TRAIN_TASK_PROBS)


def task_probs_for(kind: str, given: Optional[Sequence[float]], semantic_prob: float, instance_prob: float,
                   name: str) -> Tuple[float, float, float]:
    """(semantic, instance, panoptic) probabilities of one source: ``given`` (validated) or its kind's default.
    ``semantic_prob`` / ``instance_prob`` are INPUT.TASK_PROB's cumulative thresholds (the panoptic default)."""
    if given is None or len(given) == 0:
        if kind in _ONLY:
            return _ONLY[kind]
        return (semantic_prob, max(instance_prob - semantic_prob, 0.0), max(1.0 - max(instance_prob, semantic_prob),
                                                                           0.0))
    if len(given) != 3 or any(not isinstance(p, (int, float)) or p < 0 for p in given):
        raise ValueError(f"DATASETS.TRAIN_TASK_PROBS for {name!r}: expected (semantic, instance, panoptic) "
                         f"probabilities >= 0, got {tuple(given)!r}")
    probs = tuple(float(p) for p in given)
    if abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(f"DATASETS.TRAIN_TASK_PROBS for {name!r}: {probs} sums to {sum(probs):g}, not 1")
    if kind in _ONLY and probs != _ONLY[kind]:
        article = "an" if kind == "instance" else "a"
        raise ValueError(f"DATASETS.TRAIN_TASK_PROBS for {name!r}: {article} {kind}-only dataset can train only the "
                         f"{kind} task, i.e. {_ONLY[kind]}; got {probs}")
    return probs


def sampling_repeat_factors(sizes: Sequence[int], weights: Sequence[float]) -> torch.Tensor:
    """Per-image repeat factors (one per image, sources in order) giving source d the share weights[d] / sum(weights)
    of the images: ``w_d · N / N_d``. Raises ValueError for a wrong count, a negative weight or an all-zero list."""
    if len(weights) != len(sizes):
        raise ValueError(f"DATASETS.TRAIN_SAMPLING_WEIGHTS has {len(weights)} entries for {len(sizes)} datasets in "
                         "DATASETS.TRAIN (one weight per dataset)")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"DATASETS.TRAIN_SAMPLING_WEIGHTS {tuple(weights)} must be >= 0 with a positive sum")
    w = w / w.sum()
    total = float(sum(sizes))
    return torch.cat([torch.full((n,), w[d] * total / n, dtype=torch.float64) for d, n in enumerate(sizes) if n])


class MixedDatasetMapper:
    """Maps each record with the mapper of its source (``record["dataset_source"]``); adds ``dataset_name``."""

    def __init__(self, mappers: Sequence, names: Sequence[str]):
        """Args: one training mapper per source, and the source names (DATASETS.TRAIN order)."""
        self.mappers = list(mappers)
        self.names = list(names)

    def __call__(self, record):
        source = record["dataset_source"]
        out = self.mappers[source](record)
        out["dataset_name"] = self.names[source]
        return out


def _label_space(names):
    """(name, class names, thing ids) of the first source with stuff_classes: the shared label space."""
    for name in names:
        meta = MetadataCatalog.get(name)
        if meta.get("stuff_classes", None):
            things = sorted(int(v) for v in (meta.get("thing_dataset_id_to_contiguous_id", None) or {}).values())
            return name, list(meta.stuff_classes), things
    raise ValueError(f"DATASETS.TRAIN {tuple(names)}: no dataset has stuff_classes in its metadata, so there is no "
                     "label space to share (a panoptic or semantic dataset defines it)")


def _check_same_classes(name, classes, ref_name, ref_classes):
    if list(classes) == list(ref_classes):
        return
    diff = next((i for i, (a, b) in enumerate(zip(classes, ref_classes)) if a != b), min(len(classes),
                                                                                         len(ref_classes)))
    a = classes[diff] if diff < len(classes) else "<none>"
    b = ref_classes[diff] if diff < len(ref_classes) else "<none>"
    raise ValueError(f"DATASETS.TRAIN: {name!r} has other classes than {ref_name!r} ({len(classes)} vs "
                     f"{len(ref_classes)}; class {diff}: {a!r} vs {b!r}); mixed datasets share one label space")


def _instance_class_map(name, ref_name, ref_classes, ref_things) -> Dict[int, int]:
    """An instance-only source's contiguous thing ids → ids in the shared label space, by class name."""
    thing_classes = list(MetadataCatalog.get(name).get("thing_classes", None) or [])
    if not thing_classes:
        raise ValueError(f"DATASETS.TRAIN: instance dataset {name!r} has no thing_classes in its metadata")
    index = {c: i for i, c in enumerate(ref_classes)}
    mapping = {}
    for j, cls in enumerate(thing_classes):
        if cls not in index:
            raise ValueError(f"DATASETS.TRAIN: class {cls!r} of instance dataset {name!r} is not a class of "
                             f"{ref_name!r} (the shared label space); rename it or register the dataset with "
                             "categories named as there")
        if index[cls] not in ref_things:
            raise ValueError(f"DATASETS.TRAIN: class {cls!r} of instance dataset {name!r} is a stuff class in "
                             f"{ref_name!r}; instances need thing classes")
        mapping[j] = index[cls]
    return mapping


def load_sources(cfg) -> Tuple[List[List[Dict]], List[str]]:
    """The records of each DATASETS.TRAIN entry (``get_detection_dataset_dicts``, one call per dataset) and its kind.
    Raises ValueError for an empty dataset or records of no known kind."""
    sources, kinds = [], []
    for name in cfg.DATASETS.TRAIN:
        dicts = get_detection_dataset_dicts([name], filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        kind = record_kind(dicts[0]) if dicts else None
        if kind is None:
            raise ValueError(f"DATASETS.TRAIN: records of {name!r} have no pan_seg_file_name, annotations or "
                             "sem_seg_file_name: not a panoptic, instance or semantic dataset")
        sources.append(dicts)
        kinds.append(kind)
    return sources, kinds


def build_mixed_train_loader(cfg, sources=None, kinds=None):
    """Detectron2's train loader over all DATASETS.TRAIN sources with per-source mappers, task probabilities and
    sampling weights (module docstring). ``sources`` / ``kinds``: from ``load_sources`` (loaded if None)."""
    names = list(cfg.DATASETS.TRAIN)
    if sources is None:
        sources, kinds = load_sources(cfg)
    probs_cfg = list(cfg.DATASETS.TRAIN_TASK_PROBS)
    if probs_cfg and len(probs_cfg) != len(names):
        raise ValueError(f"DATASETS.TRAIN_TASK_PROBS has {len(probs_cfg)} entries for {len(names)} datasets in "
                         "DATASETS.TRAIN (one (semantic, instance, panoptic) triple per dataset)")
    ref_name, ref_classes, ref_things = _label_space(names)
    ref_cfg = cfg.clone()
    ref_cfg.defrost()
    ref_cfg.DATASETS.TRAIN = (ref_name,)
    base = training_mapper_kwargs(ref_cfg, True, "mixed datasets")
    lsj = cfg.INPUT.DATASET_MAPPER_NAME == "coco_unified_lsj"

    mappers, records, table = [], [], []
    for d, (name, dicts, kind) in enumerate(zip(names, sources, kinds)):
        probs = task_probs_for(kind, probs_cfg[d] if probs_cfg else None, base["semantic_prob"],
                               base["instance_prob"], name)
        kwargs = dict(base, semantic_prob=probs[0], instance_prob=probs[0] + probs[1])
        meta = MetadataCatalog.get(name)
        if kind == "panoptic":
            _check_same_classes(name, meta.get("stuff_classes", []), ref_name, ref_classes)
            if lsj:
                mapper = COCOUnifiedNewBaselineDatasetMapper(augmentations=build_lsj_augmentations(cfg),
                                                             **dict(kwargs, size_divisibility=-1))
            else:
                mapper = OneFormerUnifiedDatasetMapper(
                    augmentations=build_unified_augmentations(cfg, kwargs["ignore_label"]), **kwargs)
            dicts = [dict(r, dataset_source=d) for r in dicts]
        elif kind == "semantic":
            _check_same_classes(name, meta.get("stuff_classes", []), ref_name, ref_classes)
            ignore = int(meta.get("ignore_label", kwargs["ignore_label"]))
            mapper = OneFormerSemanticDatasetMapper(augmentations=build_unified_augmentations(cfg, ignore),
                                                    **dict(kwargs, ignore_label=ignore))
            dicts = [dict(r, dataset_source=d) for r in dicts]
        else:
            mapping = _instance_class_map(name, ref_name, ref_classes, ref_things)
            mapper = OneFormerInstanceDatasetMapper(
                augmentations=build_unified_augmentations(cfg, kwargs["ignore_label"], category_area_crop=False),
                **kwargs)
            dicts = [dict(r, dataset_source=d, annotations=[dict(a, category_id=mapping[a["category_id"]])
                                                            for a in r["annotations"]]) for r in dicts]
        mappers.append(mapper)
        records.append(dicts)
        table.append((name, kind, len(dicts), probs))

    sizes = [len(r) for r in records]
    weights = list(cfg.DATASETS.TRAIN_SAMPLING_WEIGHTS)
    if weights:
        factors = sampling_repeat_factors(sizes, weights)
        sampler = RepeatFactorTrainingSampler(factors, seed=cfg.SEED if cfg.SEED >= 0 else None)
        shares = np.asarray(weights, dtype=np.float64) / float(sum(weights))
    else:
        sampler = TrainingSampler(sum(sizes), seed=cfg.SEED if cfg.SEED >= 0 else None)
        shares = np.asarray(sizes, dtype=np.float64) / float(sum(sizes))
    lines = [f"  {name}: {kind}, {n} images, {share:.1%} of the samples, tasks semantic/instance/panoptic "
             f"{p[0]:.2f}/{p[1]:.2f}/{p[2]:.2f}" for (name, kind, n, p), share in zip(table, shares)]
    logger.info("Mixed training data in the label space of %s (%d classes):\n%s", ref_name, len(ref_classes),
                "\n".join(lines))
    dataset = [r for dicts in records for r in dicts]
    return build_detection_train_loader(
        dataset=dataset, mapper=MixedDatasetMapper(mappers, names), sampler=sampler,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH, aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS)
