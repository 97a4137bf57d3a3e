"""A tiny OneFormer config for tests: the real config path (adders + a model-zoo YAML) with small sizes."""
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

import oneformer  # noqa: F401  (registers the components)
from oneformer import add_oneformer_config_all

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_DATASET = "oneformer_tiny_test"
NUM_CLASSES = 5
THING_IDS = (3, 4)


def tiny_metadata(name: str = TINY_DATASET):
    """Metadata with classes 0..4, of which 3 and 4 are things (registered once)."""
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "thing_dataset_id_to_contiguous_id"):
        meta.set(
            stuff_classes=[f"class{i}" for i in range(NUM_CLASSES)],
            thing_classes=[f"class{i}" for i in THING_IDS],
            thing_dataset_id_to_contiguous_id={i: i for i in THING_IDS},
            stuff_dataset_id_to_contiguous_id={i: i for i in range(NUM_CLASSES)},
        )
    return meta


def tiny_cfg(base: str = "configs/ade20k/swin/oneformer_swin_tiny_bs16_160k.yaml", is_train: bool = False):
    """A Swin-based OneFormer with ~5M parameters: every component as in the YAML, only smaller."""
    cfg = add_oneformer_config_all(get_cfg())
    cfg.merge_from_file(os.path.join(REPO, base))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.IS_TRAIN = is_train
    cfg.MODEL.SWIN.EMBED_DIM = 32
    cfg.MODEL.SWIN.DEPTHS = [1, 1, 1, 1]
    cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 4, 8]
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.0
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.ONE_FORMER.HIDDEN_DIM = 64
    cfg.MODEL.ONE_FORMER.NHEADS = 4
    cfg.MODEL.ONE_FORMER.DIM_FEEDFORWARD = 64
    cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES = 10
    cfg.MODEL.ONE_FORMER.DEC_LAYERS = 4
    cfg.MODEL.ONE_FORMER.TRAIN_NUM_POINTS = 256
    cfg.MODEL.TEXT_ENCODER.WIDTH = 64
    cfg.MODEL.TEXT_ENCODER.NUM_LAYERS = 1
    cfg.MODEL.TEXT_ENCODER.N_CTX = 4
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    cfg.DATASETS.TRAIN = (TINY_DATASET,)
    tiny_metadata()
    return cfg


def unregister_prefix(prefix: str) -> None:
    """Remove every dataset registration (catalog entry and metadata) whose name starts with ``prefix``."""
    for catalog in (DatasetCatalog, MetadataCatalog):
        for name in list(catalog.list()):
            if name.startswith(prefix):
                catalog.remove(name)


def load_script(name: str, folder: str = "datasets"):
    """Import ``<repo>/<folder>/<name>.py`` as a module (scripts and tools are not a package)."""
    spec = importlib.util.spec_from_file_location(f"_script_{name}", os.path.join(REPO, folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bundled_synthetic_val(tmp_path, seed: int = 0, num_val: int = 3):
    """The bundled synthetic checkpoint and tools/train_synthetic.py (as a module) with ``num_val`` generated 64×64
    panoptic val images registered under the bundled config's dataset names; skips when the checkpoint is missing.
    Returns (train_synthetic module, checkpoint path, bundled config path)."""
    import pytest

    from oneformer.data.datasets.register_synthetic import register_all_synthetic

    ckpt = os.path.join(REPO, "demo", "assets", "oneformer_synthetic.pth")
    if not os.path.exists(ckpt):
        pytest.skip("bundled checkpoint missing")
    ts = load_script("train_synthetic", "tools")
    data = str(tmp_path / "synthetic_shapes")
    assert ts.generate_dataset(data, num_train=1, num_val=num_val, seed=seed, size=64)
    register_all_synthetic(dataset_dir=data)  # the config's names (synthetic_panoptic_val), replaced if registered
    return ts, ckpt, os.path.join(REPO, "configs", "synthetic", "oneformer_synthetic.yaml")
