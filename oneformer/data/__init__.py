"""Data: the CLIP tokenizer, task-aware dataset mappers (DATASET_MAPPER_REGISTRY) and the dataset registrations.

Importing it registers the mappers and the original datasets (ADE20K, Cityscapes, COCO, Mapillary Vistas) under
$DETECTRON2_DATASETS, with their metadata; registration only records loaders, nothing is read until used.
"""
from . import dataset_mappers, datasets  # noqa: F401
