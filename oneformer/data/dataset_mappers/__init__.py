"""Dataset mappers: turn a Detectron2 dataset record into the dict the OneFormer model consumes.

Mappers are registered by name in ``DATASET_MAPPER_REGISTRY``; ``build_dataset_mapper(cfg, is_train)`` picks the
training mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME`` (and the test mapper "oneformer_test" for
``is_train=False``). Registered names:

- "oneformer_unified": panoptic records (ADE20K, Cityscapes, Mapillary Vistas); samples a task per image (spec §6).
- "coco_unified_lsj": COCO panoptic records with large-scale jitter (flip, ResizeScale, FixedSizeCrop).
- "oneformer_semantic": semantic-only records (``sem_seg_file_name``); the task is always semantic.
- "oneformer_instance": instance-only records (COCO-style ``annotations``); the task is always instance.
- "oneformer_test": the task-aware test mapper (resize only; task from MODEL.TEST.TASK).

Training output (one dict per image): "image" uint8 (3, H, W), "instances" (gt_classes int64 (M,), gt_masks bool
(M, H, W), gt_bboxes Boxes (M, 4)), "sem_seg" int64 (H, W) (not for instance-only data), "orig_shape", "task"
("The task is {task}"), "text" (NUM_OBJECT_QUERIES − TEXT_ENCODER.N_CTX strings), "thing_ids".
"""
from detectron2.utils.registry import Registry

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "register_dataset_mapper",
    "build_dataset_mapper",
    "OneFormerUnifiedDatasetMapper",
    "COCOUnifiedNewBaselineDatasetMapper",
    "OneFormerSemanticDatasetMapper",
    "OneFormerInstanceDatasetMapper",
    "OneFormerTestDatasetMapper",
    "derive_targets",
    "build_text_list",
    "sample_task",
    "semantic_label_map",
    "pad_to_size",
    "rgb2id",
]

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Registry for OneFormer dataset mappers, selected by name (cfg.INPUT.DATASET_MAPPER_NAME for training).
A registered object is called as ``obj(cfg, is_train=...)`` and returns a callable ``mapper(dataset_dict)``.
"""


def register_dataset_mapper(name):
    """Class decorator registering a mapper under ``name`` (Detectron2's ``register()`` only uses ``__name__``).

    Registering the same class again (a module reload) replaces the entry; a different object under a taken name is
    an error.
    """

    def deco(cls):
        old = dict(DATASET_MAPPER_REGISTRY).get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise KeyError(
                f"A dataset mapper named {name!r} is already registered ({old.__module__}.{old.__qualname__})"
            )
        DATASET_MAPPER_REGISTRY._obj_map[name] = cls  # replace on reload (Registry._do_register would assert)
        return cls

    return deco


def build_dataset_mapper(cfg, is_train=True, name=None):
    """Build the mapper ``name`` (default: ``cfg.INPUT.DATASET_MAPPER_NAME`` when training, "oneformer_test"
    otherwise) as ``mapper_cls(cfg, is_train=is_train)``. Unknown names raise ValueError listing the registered ones."""
    if name is None:
        name = cfg.INPUT.DATASET_MAPPER_NAME if is_train else "oneformer_test"
    if name not in DATASET_MAPPER_REGISTRY:
        known = sorted(n for n, _ in DATASET_MAPPER_REGISTRY)
        raise ValueError(
            f"Unknown dataset mapper {name!r} (cfg.INPUT.DATASET_MAPPER_NAME); registered mappers: {known}"
        )
    return DATASET_MAPPER_REGISTRY.get(name)(cfg, is_train=is_train)


# imported after the registry exists: each module registers its mapper on import
from .oneformer_unified_dataset_mapper import (  # noqa: E402
    OneFormerUnifiedDatasetMapper,
    build_text_list,
    derive_targets,
    pad_to_size,
    rgb2id,
    sample_task,
    semantic_label_map,
)
from .coco_unified_new_baseline_dataset_mapper import COCOUnifiedNewBaselineDatasetMapper  # noqa: E402
from .semantic_dataset_mapper import OneFormerSemanticDatasetMapper  # noqa: E402
from .instance_dataset_mapper import OneFormerInstanceDatasetMapper  # noqa: E402
from .dataset_mapper import OneFormerTestDatasetMapper  # noqa: E402
