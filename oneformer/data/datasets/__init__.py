"""Dataset registrations for OneFormer; importing this package registers them all.

Registered names (files under ``$DETECTRON2_DATASETS``, default ``datasets``; see ``datasets/README.md``):

- ``ade20k_panoptic_{train,val}`` (evaluator "ade20k_panoptic_seg"), ``ade20k_instance_{train,val}`` ("coco");
  ``ade20k_sem_seg_{train,val}`` are Detectron2 built-ins ("sem_seg").
- ``cityscapes_fine_panoptic_{train,val}`` ("cityscapes_panoptic_seg"; replaces Detectron2's registration);
  ``cityscapes_fine_{sem_seg,instance_seg}_{train,val,test}`` are Detectron2 built-ins.
- ``coco_2017_{train,val}_panoptic_with_sem_seg`` ("coco_panoptic_seg"), ``coco_2017_val_panoptic2instance`` ("coco").
- ``mapillary_vistas_panoptic_{train,val}`` ("mapillary_vistas_panoptic_seg"), ``mapillary_vistas_sem_seg_{train,val}``
  ("sem_seg").

Paths are fixed when a name is registered: the import uses ``$DETECTRON2_DATASETS`` as set at that time; call
``register_all(root)`` to (re-)register everything under another root (``prefix`` registers copies under other names).
Re-registering a name replaces the earlier registration, so importing or reloading twice is safe.

Your own data: ``register_panoptic_dataset`` / ``register_semantic_dataset`` / ``register_instance_dataset``.
"""
import detectron2.data.datasets  # noqa: F401  (Detectron2's built-in registrations must come first)
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import builtin as _d2_builtin

from . import (  # noqa: F401
    custom,
    register_ade20k_instance,
    register_ade20k_panoptic,
    register_cityscapes_panoptic,
    register_coco_panoptic_annos_semseg,
    register_mapillary_vistas,
    register_mapillary_vistas_panoptic,
    register_synthetic,
)
from .custom import (
    datasets_root,
    register_instance_dataset,
    register_panoptic_dataset,
    register_semantic_dataset,
    unregister,
)
from .register_ade20k_instance import register_all_ade20k_instance
from .register_ade20k_panoptic import register_all_ade20k_panoptic
from .register_cityscapes_panoptic import register_all_cityscapes_panoptic
from .register_coco_panoptic_annos_semseg import register_all_coco_panoptic_annos_sem_seg
from .register_mapillary_vistas import register_all_mapillary_vistas
from .register_mapillary_vistas_panoptic import register_all_mapillary_vistas_panoptic
from .register_synthetic import register_all_synthetic

__all__ = [
    "register_all",
    "register_panoptic_dataset",
    "register_semantic_dataset",
    "register_instance_dataset",
    "register_all_ade20k_panoptic",
    "register_all_ade20k_instance",
    "register_all_cityscapes_panoptic",
    "register_all_coco_panoptic_annos_sem_seg",
    "register_all_mapillary_vistas_panoptic",
    "register_all_mapillary_vistas",
    "register_all_synthetic",
]


def _ensure_detectron2_builtins(root):
    # the configs evaluate on these Detectron2 built-ins; put them back if something removed them
    groups = (
        ({"ade20k_sem_seg_train", "ade20k_sem_seg_val"}, _d2_builtin.register_all_ade20k),
        (
            {f"cityscapes_fine_{t}_{s}" for t in ("sem_seg", "instance_seg") for s in ("train", "val", "test")},
            _d2_builtin.register_all_cityscapes,
        ),
    )
    for names, register in groups:
        if names <= set(DatasetCatalog.list()):
            continue
        for name in names:
            unregister(name)
        register(root)


def register_all(root=None, prefix=""):
    """Register every OneFormer dataset with files under ``root`` (default ``$DETECTRON2_DATASETS`` read now).

    With a ``prefix`` the names become ``prefix + name`` (the Detectron2 built-ins are left alone). Returns the names.
    """
    root = datasets_root() if root is None else root
    names = []
    names += register_all_ade20k_panoptic(root, prefix)
    names += register_all_ade20k_instance(root, prefix)
    names += register_all_cityscapes_panoptic(root, prefix)
    names += register_all_coco_panoptic_annos_sem_seg(root, prefix)
    names += register_all_mapillary_vistas_panoptic(root, prefix)
    names += register_all_mapillary_vistas(root, prefix)
    names += register_all_synthetic(root, prefix)
    if not prefix:
        _ensure_detectron2_builtins(root)
    return names


register_all()
