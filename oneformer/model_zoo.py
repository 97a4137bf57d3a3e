"""The OneFormer model zoo: config files and released checkpoints.

``MODEL_ZOO`` maps each model config, as a path relative to ``configs/`` (for example
``"ade20k/swin/oneformer_swin_large_bs16_160k.yaml"``), to the URL of the checkpoint released for it (``None`` where
none was released) and the metrics the release reports for it. Every config file repeats its URL in its first line,
``# checkpoint: <URL>`` or ``# checkpoint: none released``; the tests keep the two in agreement.

Metric names, as reported per dataset (mIoU is single-scale, mIoU_ms is multi-scale + flip):
ADE20K and Cityscapes PQ / AP / mIoU / mIoU_ms; COCO PQ / PQ_th / PQ_st / AP / mIoU; Mapillary Vistas PQ / mIoU /
mIoU_ms. The Mapillary models trained by ``mapillary_vistas/convnext/cityscapes_pretrain_*`` are released only as
pretraining weights for Cityscapes, without metrics of their own.

This module uses only the standard library, so it can be imported without building the model code.
"""
import difflib
import os
from collections import namedtuple
from pathlib import Path

__all__ = ["CHECKPOINT_BASE_URL", "ModelZooEntry", "MODEL_ZOO", "list_configs", "get_config_file", "get_checkpoint_url"]

CHECKPOINT_BASE_URL = "https://shi-labs.com/projects/oneformer/"

ModelZooEntry = namedtuple("ModelZooEntry", ["checkpoint_url", "metrics"])


def _released(folder_and_file, **metrics):
    return ModelZooEntry(CHECKPOINT_BASE_URL + folder_and_file, metrics)


_UNRELEASED = ModelZooEntry(None, {})

MODEL_ZOO = {
    # ---- ADE20K (PQ / AP / mIoU / mIoU_ms)
    "ade20k/oneformer_R50_bs16_160k.yaml": _UNRELEASED,
    "ade20k/swin/oneformer_swin_tiny_bs16_160k.yaml": _UNRELEASED,
    "ade20k/swin/oneformer_swin_large_bs16_160k.yaml": _released(
        "ade20k/250_16_swin_l_oneformer_ade20k_160k.pth", PQ=49.8, AP=35.9, mIoU=57.0, mIoU_ms=57.7
    ),
    "ade20k/swin/oneformer_swin_large_bs16_160k_896x896.yaml": _released(
        "ade20k/896x896_250_16_swin_l_oneformer_ade20k_160k.pth", PQ=51.1, AP=37.6, mIoU=57.4, mIoU_ms=58.3
    ),
    "ade20k/swin/oneformer_swin_large_bs16_160k_1280x1280.yaml": _released(
        "ade20k/1280x1280_250_16_swin_l_oneformer_ade20k_160k.pth", PQ=51.4, AP=37.8, mIoU=57.0, mIoU_ms=57.7
    ),
    "ade20k/convnext/oneformer_convnext_large_bs16_160k.yaml": _released(
        "ade20k/250_16_convnext_l_oneformer_ade20k_160k.pth", PQ=50.0, AP=36.2, mIoU=56.6, mIoU_ms=57.4
    ),
    "ade20k/convnext/oneformer_convnext_xlarge_bs16_160k.yaml": _released(
        "ade20k/250_16_convnext_xl_oneformer_ade20k_160k.pth", PQ=50.1, AP=36.3, mIoU=57.4, mIoU_ms=58.8
    ),
    "ade20k/dinat/oneformer_dinat_large_bs16_160k.yaml": _released(
        "ade20k/250_16_dinat_l_oneformer_ade20k_160k.pth", PQ=50.5, AP=36.0, mIoU=58.3, mIoU_ms=58.4
    ),
    "ade20k/dinat/oneformer_dinat_large_bs16_160k_896x896.yaml": _released(
        "ade20k/896x896_250_16_dinat_l_oneformer_ade20k_160k.pth", PQ=51.2, AP=36.8, mIoU=58.1, mIoU_ms=58.6
    ),
    "ade20k/dinat/oneformer_dinat_large_bs16_160k_1280x1280.yaml": _released(
        "ade20k/1280x1280_250_16_dinat_l_oneformer_ade20k_160k.pth", PQ=51.5, AP=37.1, mIoU=58.3, mIoU_ms=58.7
    ),
    "ade20k/dinat/coco_pretrain_oneformer_dinat_large_bs16_160k_1280x1280.yaml": _released(
        "ade20k/coco_pretrain_1280x1280_150_16_dinat_l_oneformer_ade20k_160k.pth",
        PQ=53.4, AP=40.2, mIoU=58.4, mIoU_ms=58.8,
    ),
    # ---- Cityscapes (PQ / AP / mIoU / mIoU_ms)
    "cityscapes/oneformer_R50_bs16_90k.yaml": _UNRELEASED,
    "cityscapes/swin/oneformer_swin_large_bs16_90k.yaml": _released(
        "cityscapes/250_16_swin_l_oneformer_cityscapes_90k.pth", PQ=67.2, AP=45.6, mIoU=83.0, mIoU_ms=84.4
    ),
    "cityscapes/convnext/oneformer_convnext_large_bs16_90k.yaml": _released(
        "cityscapes/250_16_convnext_l_oneformer_cityscapes_90k.pth", PQ=68.5, AP=46.5, mIoU=83.0, mIoU_ms=84.0
    ),
    "cityscapes/convnext/oneformer_convnext_xlarge_bs16_90k.yaml": _released(
        "cityscapes/250_16_convnext_xl_oneformer_cityscapes_90k.pth", PQ=68.4, AP=46.7, mIoU=83.6, mIoU_ms=84.6
    ),
    "cityscapes/convnext/mapillary_pretrain_oneformer_convnext_large_bs16_90k.yaml": _released(
        "cityscapes/mapillary_pretrain_250_16_convnext_l_oneformer_cityscapes_90k.pth",
        PQ=70.1, AP=48.7, mIoU=84.6, mIoU_ms=85.2,
    ),
    "cityscapes/convnext/mapillary_pretrain_oneformer_convnext_xlarge_bs16_90k.yaml": _released(
        "cityscapes/mapillary_pretrain_250_16_convnext_xl_oneformer_cityscapes_90k.pth",
        PQ=69.7, AP=48.9, mIoU=84.5, mIoU_ms=85.8,
    ),
    "cityscapes/dinat/oneformer_dinat_large_bs16_90k.yaml": _released(
        "cityscapes/250_16_dinat_l_oneformer_cityscapes_90k.pth", PQ=67.6, AP=45.6, mIoU=83.1, mIoU_ms=84.0
    ),
    # ---- COCO (PQ / PQ_th / PQ_st / AP / mIoU)
    "coco/oneformer_R50_bs16_50ep.yaml": _UNRELEASED,
    "coco/swin/oneformer_swin_tiny_bs16_50ep.yaml": _UNRELEASED,
    "coco/swin/oneformer_swin_large_bs16_100ep.yaml": _released(
        "coco/150_16_swin_l_oneformer_coco_100ep.pth", PQ=57.9, PQ_th=64.4, PQ_st=48.0, AP=49.0, mIoU=67.4
    ),
    "coco/dinat/oneformer_dinat_large_bs16_100ep.yaml": _released(
        "coco/150_16_dinat_l_oneformer_coco_100ep.pth", PQ=58.0, PQ_th=64.3, PQ_st=48.4, AP=49.2, mIoU=68.1
    ),
    # ---- Mapillary Vistas (PQ / mIoU / mIoU_ms); checkpoints live in the "mapillary/" folder
    "mapillary_vistas/oneformer_R50_bs16_300k.yaml": _UNRELEASED,
    "mapillary_vistas/swin/oneformer_swin_large_bs16_300k.yaml": _released(
        "mapillary/250_16_swin_l_oneformer_mapillary_300k.pth", PQ=46.7, mIoU=62.9, mIoU_ms=64.1
    ),
    "mapillary_vistas/convnext/oneformer_convnext_large_bs16_300k.yaml": _released(
        "mapillary/250_16_convnext_l_oneformer_mapillary_300k.pth", PQ=47.9, mIoU=63.2, mIoU_ms=63.8
    ),
    "mapillary_vistas/convnext/oneformer_convnext_xlarge_bs16_300k.yaml": _UNRELEASED,
    "mapillary_vistas/convnext/cityscapes_pretrain_oneformer_convnext_large_bs16_300k.yaml": _released(
        "mapillary/mapillary_pretrain_250_16_convnext_l_oneformer_mapillary_300k.pth"
    ),
    "mapillary_vistas/convnext/cityscapes_pretrain_oneformer_convnext_xlarge_bs16_300k.yaml": _released(
        "mapillary/mapillary_pretrain_250_16_convnext_xl_oneformer_mapillary_300k.pth"
    ),
    "mapillary_vistas/dinat/oneformer_dinat_large_bs16_300k.yaml": _released(
        "mapillary/250_16_dinat_l_oneformer_mapillary_300k.pth", PQ=47.8, mIoU=64.0, mIoU_ms=64.9
    ),
}


def _config_roots():
    """Directories that may hold the ``configs/`` tree, most specific first."""
    roots = []
    env = os.environ.get("ONEFORMER_CONFIGS")
    if env:
        roots.append(Path(env))
    here = Path(__file__).resolve().parent
    roots.append(here / "configs")  # if packaged as package data
    roots.append(here.parent / "configs")  # source checkout
    return roots


def _normalize(rel_path):
    rel = str(rel_path).replace("\\", "/")
    if rel.startswith("configs/"):
        rel = rel[len("configs/"):]
    return rel


def _close_matches(rel, candidates):
    matches = difflib.get_close_matches(rel, candidates, n=5, cutoff=0.5)
    name = rel.rsplit("/", 1)[-1]
    matches += [c for c in candidates if c.endswith("/" + name) and c not in matches]
    return matches


def list_configs():
    """Return the sorted relative paths (under ``configs/``) of every model config in the zoo."""
    return sorted(MODEL_ZOO)


def get_config_file(rel_path):
    """Locate a config file.

    Args:
        rel_path (str): path relative to ``configs/``, e.g. ``"coco/swin/oneformer_swin_large_bs16_100ep.yaml"``
            (a leading ``"configs/"`` is accepted). Base configs may be named too.
    Returns:
        str: the absolute path of the file. The ``ONEFORMER_CONFIGS`` environment variable, if set, names a
        configs directory that is searched first.
    Raises:
        FileNotFoundError: if no configs directory holds the file; the message lists close matches.
    """
    rel = _normalize(rel_path)
    existing_root = None
    for root in _config_roots():
        if root.is_dir():
            existing_root = existing_root or root
            candidate = root / rel
            if candidate.is_file():
                return str(candidate.resolve())
    known = set(MODEL_ZOO)
    if existing_root is not None:
        known |= {p.relative_to(existing_root).as_posix() for p in existing_root.rglob("*.yaml")}
    matches = _close_matches(rel, sorted(known))
    where = ", ".join(str(r) for r in _config_roots())
    hint = ("; did you mean: " + ", ".join(matches)) if matches else ""
    raise FileNotFoundError(f"OneFormer config {rel_path!r} not found under {where}{hint}")


def get_checkpoint_url(rel_path):
    """Return the released checkpoint URL for a model config.

    Args:
        rel_path (str): config path relative to ``configs/`` (a leading ``"configs/"`` is accepted).
    Returns:
        str: the https URL of the ``.pth`` file released for that config.
    Raises:
        KeyError: if the config is not in the zoo (the message lists close matches).
        ValueError: if the config exists but no checkpoint was released for it.
    """
    rel = _normalize(rel_path)
    if rel not in MODEL_ZOO:
        matches = _close_matches(rel, list_configs())
        hint = ("; did you mean: " + ", ".join(matches)) if matches else ""
        raise KeyError(f"{rel_path!r} is not a OneFormer model-zoo config{hint}")
    url = MODEL_ZOO[rel].checkpoint_url
    if url is None:
        raise ValueError(f"no checkpoint was released for {rel!r}; train it or pick a config with a checkpoint")
    return url


# Checkpoints shipped in the repository, by config (path relative to configs/), as paths relative to the repository.
BUNDLED = {
    "synthetic/oneformer_synthetic.yaml": "demo/assets/oneformer_synthetic.pth",
}


def default_weights(config_file):
    """The checkpoint to run a config with: the bundled file or the released URL; None if there is none.

    ``config_file`` may be a path to a file under configs/ or a path relative to configs/.
    """
    rel = _normalize(str(config_file))
    repo = Path(__file__).resolve().parents[1]
    for key in (rel, *(k for k in list(BUNDLED) + list(MODEL_ZOO) if rel.endswith("/" + k))):
        if key in BUNDLED:
            return str(repo / BUNDLED[key])
        if key in MODEL_ZOO:
            return MODEL_ZOO[key].checkpoint_url
    return None
