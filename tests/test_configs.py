"""Model-zoo configs: every YAML merges into the OneFormer config, holds the values the spec and the reference
parameter table give, and names the same checkpoint as ``oneformer.model_zoo``."""
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest
from tests.reference import load_reference

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
CKPT_RE = re.compile(r"^# checkpoint: (none released|https://shi-labs\.com/projects/oneformer/(\S+))$")
DATASET_FOLDER = {"ade20k": "ade20k", "cityscapes": "cityscapes", "coco": "coco", "mapillary_vistas": "mapillary"}


def _load(module_name, rel_file):
    """Import ``oneformer.<module_name>``; if the package itself does not import yet, load the file alone."""
    try:
        return importlib.import_module("oneformer." + module_name)
    except Exception:  # other subpackages may be half-built; the file needs only the standard library / detectron2
        spec = importlib.util.spec_from_file_location("_standalone_oneformer_" + module_name, REPO / rel_file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


add_oneformer_config_all = _load("config", "oneformer/config.py").add_oneformer_config_all
model_zoo = _load("model_zoo", "oneformer/model_zoo.py")


def _all_yamls():
    """The model-zoo YAMLs (configs/synthetic/ holds the bundled demo model, not a released one; *_1gpu_24gb.yaml are
    training recipes derived from them, tested at the end)."""
    return sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")
                  if not p.relative_to(CONFIGS).as_posix().startswith("synthetic/") and not _is_recipe(p.name))


def _is_recipe(name):
    return name.endswith("_1gpu_24gb.yaml")


def _is_base(rel):
    return Path(rel).name.startswith("Base-")


def _model_yamls():
    return [r for r in _all_yamls() if not _is_base(r)]


def _cfg(rel):
    from detectron2.config import get_cfg

    cfg = add_oneformer_config_all(get_cfg())
    cfg.merge_from_file(str(CONFIGS / rel))
    return cfg


def _first_line(rel):
    with open(CONFIGS / rel) as f:
        return f.readline().rstrip("\n")


EXPECTED_FILES = {
    "ade20k/Base-ADE20K-UnifiedSegmentation.yaml",
    "ade20k/oneformer_R50_bs16_160k.yaml",
    "ade20k/swin/oneformer_swin_large_bs16_160k.yaml",
    "ade20k/swin/oneformer_swin_large_bs16_160k_896x896.yaml",
    "ade20k/swin/oneformer_swin_large_bs16_160k_1280x1280.yaml",
    "ade20k/swin/oneformer_swin_tiny_bs16_160k.yaml",
    "ade20k/convnext/oneformer_convnext_large_bs16_160k.yaml",
    "ade20k/convnext/oneformer_convnext_xlarge_bs16_160k.yaml",
    "ade20k/dinat/oneformer_dinat_large_bs16_160k.yaml",
    "ade20k/dinat/oneformer_dinat_large_bs16_160k_896x896.yaml",
    "ade20k/dinat/oneformer_dinat_large_bs16_160k_1280x1280.yaml",
    "ade20k/dinat/coco_pretrain_oneformer_dinat_large_bs16_160k_1280x1280.yaml",
    "cityscapes/Base-Cityscapes-UnifiedSegmentation.yaml",
    "cityscapes/oneformer_R50_bs16_90k.yaml",
    "cityscapes/swin/oneformer_swin_large_bs16_90k.yaml",
    "cityscapes/convnext/oneformer_convnext_large_bs16_90k.yaml",
    "cityscapes/convnext/oneformer_convnext_xlarge_bs16_90k.yaml",
    "cityscapes/convnext/mapillary_pretrain_oneformer_convnext_large_bs16_90k.yaml",
    "cityscapes/convnext/mapillary_pretrain_oneformer_convnext_xlarge_bs16_90k.yaml",
    "cityscapes/dinat/oneformer_dinat_large_bs16_90k.yaml",
    "coco/Base-COCO-UnifiedSegmentation.yaml",
    "coco/oneformer_R50_bs16_50ep.yaml",
    "coco/swin/oneformer_swin_large_bs16_100ep.yaml",
    "coco/swin/oneformer_swin_tiny_bs16_50ep.yaml",
    "coco/dinat/oneformer_dinat_large_bs16_100ep.yaml",
    "mapillary_vistas/Base-Mapillary-UnifiedSegmentation.yaml",
    "mapillary_vistas/oneformer_R50_bs16_300k.yaml",
    "mapillary_vistas/swin/oneformer_swin_large_bs16_300k.yaml",
    "mapillary_vistas/convnext/oneformer_convnext_large_bs16_300k.yaml",
    "mapillary_vistas/convnext/oneformer_convnext_xlarge_bs16_300k.yaml",
    "mapillary_vistas/convnext/cityscapes_pretrain_oneformer_convnext_large_bs16_300k.yaml",
    "mapillary_vistas/convnext/cityscapes_pretrain_oneformer_convnext_xlarge_bs16_300k.yaml",
    "mapillary_vistas/dinat/oneformer_dinat_large_bs16_300k.yaml",
}


def test_layout_matches_release():
    assert set(_all_yamls()) == EXPECTED_FILES


@pytest.mark.parametrize("rel", _all_yamls())
def test_yaml_merges(rel):
    cfg = _cfg(rel)  # raises KeyError on any unknown key
    assert cfg.INPUT.FORMAT == "RGB"
    assert cfg.VERSION == 2
    assert cfg.SOLVER.IMS_PER_BATCH == 16 and cfg.SOLVER.BASE_LR == pytest.approx(1e-4)
    assert cfg.SOLVER.OPTIMIZER == "ADAMW" and cfg.SOLVER.WEIGHT_DECAY == pytest.approx(0.05)
    assert cfg.SOLVER.BACKBONE_MULTIPLIER == pytest.approx(0.1)
    clip = cfg.SOLVER.CLIP_GRADIENTS
    assert (clip.ENABLED, clip.CLIP_TYPE, clip.CLIP_VALUE, clip.NORM_TYPE) == (True, "full_model", 0.01, 2.0)
    assert list(cfg.MODEL.PIXEL_MEAN) == [123.675, 116.28, 103.53]
    assert list(cfg.MODEL.PIXEL_STD) == [58.395, 57.12, 57.375]
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0


@pytest.mark.parametrize("rel", _model_yamls())
def test_model_yaml_common_values(rel):
    cfg = _cfg(rel)
    assert cfg.MODEL.META_ARCHITECTURE == "OneFormer"
    head, of, te = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.ONE_FORMER, cfg.MODEL.TEXT_ENCODER
    assert head.NAME == "OneFormerHead" and head.PIXEL_DECODER_NAME == "MSDeformAttnPixelDecoder"
    assert list(head.IN_FEATURES) == ["res2", "res3", "res4", "res5"]
    assert list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES) == ["res3", "res4", "res5"]
    assert (head.CONVS_DIM, head.MASK_DIM, head.NORM, head.COMMON_STRIDE, head.TRANSFORMER_ENC_LAYERS) == (
        256, 256, "GN", 4, 6)
    assert of.TRANSFORMER_IN_FEATURE == "multi_scale_pixel_decoder"
    assert (of.CLASS_WEIGHT, of.MASK_WEIGHT, of.DICE_WEIGHT, of.CONTRASTIVE_WEIGHT) == (2.0, 5.0, 5.0, 0.5)
    assert (of.DEC_LAYERS, of.CLASS_DEC_LAYERS, of.HIDDEN_DIM, of.NHEADS, of.DIM_FEEDFORWARD) == (10, 2, 256, 8, 2048)
    assert of.TRAIN_NUM_POINTS == 12544
    assert (te.NUM_LAYERS, te.WIDTH, te.CONTEXT_LENGTH, te.N_CTX) == (6, 256, 77, 16)
    assert te.CONTEXT_LENGTH == cfg.INPUT.MAX_SEQ_LEN and cfg.INPUT.TASK_SEQ_LEN == 77
    t = cfg.MODEL.TEST
    assert t.SEMANTIC_ON and t.INSTANCE_ON and t.PANOPTIC_ON and t.TASK == "panoptic"
    assert t.OVERLAP_THRESHOLD == 0.8
    assert cfg.TEST.DETECTIONS_PER_IMAGE == of.NUM_OBJECT_QUERIES


def _param_count_cases():
    data = load_reference("param_counts.json")
    return [pytest.param(v["config"], v["is_train"], id=k) for k, v in sorted(data.items())]


@pytest.mark.parametrize("config,ref", _param_count_cases())
def test_reference_values(config, ref):
    assert config.startswith("configs/")
    cfg = _cfg(config[len("configs/"):])
    got = {
        "num_queries": cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES,
        "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        "dec_layers_cfg": cfg.MODEL.ONE_FORMER.DEC_LAYERS,
        "train_dataset": cfg.DATASETS.TRAIN[0],
        "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
        "max_size_test": cfg.INPUT.MAX_SIZE_TEST,
        "input_format": cfg.INPUT.FORMAT,
        "size_divisibility": cfg.MODEL.ONE_FORMER.SIZE_DIVISIBILITY,
        "object_mask_threshold": cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD,
        "overlap_threshold": cfg.MODEL.TEST.OVERLAP_THRESHOLD,
        "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
    }
    assert got == {k: ref[k] for k in got}


def test_reference_table_covers_seven_configs():
    assert len(_param_count_cases()) == 7


# ---------------------------------------------------------------- spot checks of the spec's §1.2 tables


def _sizes(base):
    return [int(x * 0.1 * base) for x in range(5, 21)]


@pytest.mark.parametrize(
    "rel,short_base,max_train,crop,pad,test_min,test_max,tta,tta_max",
    [
        ("ade20k/oneformer_R50_bs16_160k.yaml", 512, 2048, (512, 512), 512, 512, 2048,
         [256, 384, 512, 640, 768, 896], 3584),
        ("ade20k/swin/oneformer_swin_large_bs16_160k.yaml", 640, 2560, (640, 640), 640, 640, 2560,
         [320, 480, 640, 800, 960, 1120], 4480),
        ("ade20k/swin/oneformer_swin_large_bs16_160k_896x896.yaml", 896, 3584, (896, 896), 896, 896, 3584,
         [448, 678, 896, 1120, 1344, 1568], 6272),
        ("ade20k/dinat/oneformer_dinat_large_bs16_160k_1280x1280.yaml", 1280, 5120, (1280, 1280), 1280, 1280, 5120,
         [640, 960, 1280, 1600, 1920, 2240], 8960),
        ("ade20k/convnext/oneformer_convnext_xlarge_bs16_160k.yaml", 640, 2560, (640, 640), 640, 640, 2560,
         [320, 480, 640, 800, 960, 1120], 4480),
        ("cityscapes/dinat/oneformer_dinat_large_bs16_90k.yaml", 1024, 4096, (512, 1024), -1, 1024, 2048,
         [512, 768, 1024, 1280, 1536, 1792], 4096),
        ("mapillary_vistas/swin/oneformer_swin_large_bs16_300k.yaml", 2048, 8192, (1024, 1024), 1024, 2048, 2048,
         [512, 768, 1024, 1280, 1536, 1792], 4096),
    ],
)
def test_input_sizes(rel, short_base, max_train, crop, pad, test_min, test_max, tta, tta_max):
    cfg = _cfg(rel)
    assert list(cfg.INPUT.MIN_SIZE_TRAIN) == _sizes(short_base)
    assert cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "choice"
    assert cfg.INPUT.MAX_SIZE_TRAIN == max_train
    assert cfg.INPUT.CROP.ENABLED and cfg.INPUT.CROP.TYPE == "absolute"
    assert tuple(cfg.INPUT.CROP.SIZE) == crop
    assert cfg.INPUT.SIZE_DIVISIBILITY == pad
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (test_min, test_max)
    assert list(cfg.TEST.AUG.MIN_SIZES) == tta and cfg.TEST.AUG.MAX_SIZE == tta_max and cfg.TEST.AUG.FLIP
    assert cfg.INPUT.COLOR_AUG_SSD is True
    assert cfg.INPUT.DATASET_MAPPER_NAME == "oneformer_unified"


@pytest.mark.parametrize(
    "dataset,ncls,ignore,thr,train,pan,ins,sem,max_iter,eval_period,workers,norm",
    [
        ("ade20k/oneformer_R50_bs16_160k.yaml", 150, 255, 0.5, "ade20k_panoptic_train", "ade20k_panoptic_val",
         "ade20k_instance_val", "ade20k_sem_seg_val", 160000, 5000, 4, "FrozenBN"),
        ("cityscapes/oneformer_R50_bs16_90k.yaml", 19, 255, 0.8, "cityscapes_fine_panoptic_train",
         "cityscapes_fine_panoptic_val", "cityscapes_fine_instance_seg_val", "cityscapes_fine_sem_seg_val",
         90000, 5000, 4, "SyncBN"),
        ("coco/oneformer_R50_bs16_50ep.yaml", 133, 255, 0.8, "coco_2017_train_panoptic_with_sem_seg",
         "coco_2017_val_panoptic_with_sem_seg", "coco_2017_val_panoptic2instance",
         "coco_2017_val_panoptic_with_sem_seg", 368750, 5000, 4, "FrozenBN"),
        ("mapillary_vistas/oneformer_R50_bs16_300k.yaml", 65, 65, 0.8, "mapillary_vistas_panoptic_train",
         "mapillary_vistas_panoptic_val", "mapillary_vistas_panoptic_val", "mapillary_vistas_sem_seg_val",
         300000, 30000, 10, "SyncBN"),
    ],
)
def test_dataset_families(dataset, ncls, ignore, thr, train, pan, ins, sem, max_iter, eval_period, workers, norm):
    cfg = _cfg(dataset)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == ncls and cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE == ignore
    assert cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD == thr
    assert tuple(cfg.DATASETS.TRAIN) == (train,)
    assert tuple(cfg.DATASETS.TEST_PANOPTIC) == (pan,)
    assert tuple(cfg.DATASETS.TEST_INSTANCE) == (ins,)
    assert tuple(cfg.DATASETS.TEST_SEMANTIC) == (sem,)
    assert cfg.SOLVER.MAX_ITER == max_iter
    assert cfg.TEST.EVAL_PERIOD == eval_period
    assert cfg.DATALOADER.NUM_WORKERS == workers and cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    r = cfg.MODEL.RESNETS
    assert r.NORM == norm
    assert (r.DEPTH, r.STEM_TYPE, r.STEM_OUT_CHANNELS, r.STRIDE_IN_1X1) == (50, "basic", 64, False)
    assert list(r.OUT_FEATURES) == ["res2", "res3", "res4", "res5"]
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone"
    assert cfg.MODEL.WEIGHTS == "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
    assert cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES == 150
    assert cfg.SOLVER.AMP.ENABLED


def test_poly_schedule_without_warmup():
    for rel in ("ade20k/oneformer_R50_bs16_160k.yaml", "cityscapes/oneformer_R50_bs16_90k.yaml",
                "mapillary_vistas/oneformer_R50_bs16_300k.yaml"):
        cfg = _cfg(rel)
        assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR", rel
        assert (cfg.SOLVER.WARMUP_FACTOR, cfg.SOLVER.WARMUP_ITERS) == (1.0, 0), rel


def test_coco_schedules_and_lsj():
    r50 = _cfg("coco/oneformer_R50_bs16_50ep.yaml")
    assert r50.SOLVER.LR_SCHEDULER_NAME == "WarmupMultiStepLR" and r50.SOLVER.GAMMA == 0.1
    assert tuple(r50.SOLVER.STEPS) == (327778, 355092)
    assert (r50.SOLVER.WARMUP_FACTOR, r50.SOLVER.WARMUP_ITERS) == (1.0, 10)
    assert r50.INPUT.DATASET_MAPPER_NAME == "coco_unified_lsj"
    assert (r50.INPUT.IMAGE_SIZE, r50.INPUT.MIN_SCALE, r50.INPUT.MAX_SCALE) == (1024, 0.1, 2.0)
    swin = _cfg("coco/swin/oneformer_swin_large_bs16_100ep.yaml")
    assert tuple(swin.SOLVER.STEPS) == (655556, 735184) and swin.SOLVER.MAX_ITER == 737500
    assert not swin.SOLVER.AMP.ENABLED
    dinat = _cfg("coco/dinat/oneformer_dinat_large_bs16_100ep.yaml")
    assert tuple(dinat.SOLVER.STEPS) == (655556, 710184) and dinat.SOLVER.MAX_ITER == 737500
    tiny = _cfg("coco/swin/oneformer_swin_tiny_bs16_50ep.yaml")
    assert tuple(tiny.SOLVER.STEPS) == (327778, 355092) and tiny.SOLVER.MAX_ITER == 368750
    assert tiny.SOLVER.AMP.ENABLED


def test_mapillary_task_prob():
    for rel in ("mapillary_vistas/oneformer_R50_bs16_300k.yaml",
                "mapillary_vistas/convnext/oneformer_convnext_large_bs16_300k.yaml",
                "mapillary_vistas/dinat/oneformer_dinat_large_bs16_300k.yaml"):
        tp = _cfg(rel).INPUT.TASK_PROB
        assert (tp.SEMANTIC, tp.INSTANCE) == (0.5, 0.5), rel
    for size in ("large", "xlarge"):
        tp = _cfg(f"mapillary_vistas/convnext/cityscapes_pretrain_oneformer_convnext_{size}_bs16_300k.yaml").INPUT.TASK_PROB
        assert (tp.SEMANTIC, tp.INSTANCE) == (0.33, 0.66)
    tp = _cfg("cityscapes/oneformer_R50_bs16_90k.yaml").INPUT.TASK_PROB
    assert (tp.SEMANTIC, tp.INSTANCE) == (0.33, 0.66)


SWIN_L = dict(EMBED_DIM=192, DEPTHS=[2, 2, 18, 2], NUM_HEADS=[6, 12, 24, 48], WINDOW_SIZE=12, PRETRAIN_IMG_SIZE=384,
              DROP_PATH_RATE=0.3)
SWIN_T = dict(EMBED_DIM=96, DEPTHS=[2, 2, 6, 2], NUM_HEADS=[3, 6, 12, 24], WINDOW_SIZE=7, DROP_PATH_RATE=0.3)


@pytest.mark.parametrize("rel", [r for r in _model_yamls() if "/swin/" in r])
def test_swin_variants(rel):
    cfg = _cfg(rel)
    assert cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer"
    large = "swin_large" in rel
    for k, v in (SWIN_L if large else SWIN_T).items():
        got = cfg.MODEL.SWIN[k]
        assert (list(got) if isinstance(v, list) else got) == v, k
    assert cfg.MODEL.WEIGHTS == ("swin_large_patch4_window12_384_22kto1k.pkl" if large
                                 else "swin_tiny_patch4_window7_224.pkl")
    queries = 250 if large and not rel.startswith("coco/") else 150
    assert cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES == queries
    assert cfg.TEST.DETECTIONS_PER_IMAGE == queries
    assert cfg.SOLVER.AMP.ENABLED == (rel != "coco/swin/oneformer_swin_large_bs16_100ep.yaml")


@pytest.mark.parametrize("rel", [r for r in _model_yamls() if "/convnext/" in r])
def test_convnext_variants(rel):
    cfg = _cfg(rel)
    c = cfg.MODEL.CONVNEXT
    assert cfg.MODEL.BACKBONE.NAME == "D2ConvNeXt"
    xl = "xlarge" in rel
    assert list(c.DIMS) == ([256, 512, 1024, 2048] if xl else [192, 384, 768, 1536])
    assert list(c.DEPTHS) == [3, 3, 27, 3] and c.DROP_PATH_RATE == 0.4 and c.LSIT == 1.0
    size = "xl" if xl else "l"
    if Path(rel).name.startswith("mapillary_pretrain_"):
        assert cfg.MODEL.WEIGHTS == f"250_16_convnext_{size}_oneformer_mapillary_300k.pth"
    else:
        assert cfg.MODEL.WEIGHTS == ("convnext_xlarge_22k_1k_384_ema.pkl" if xl else "convnext_large_22k_1k_384.pkl")
    assert cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES == 250 and cfg.TEST.DETECTIONS_PER_IMAGE == 250
    assert cfg.SOLVER.AMP.ENABLED


DIL_11 = [[1, 20, 1], [1, 5, 1, 10], [1, 2, 1, 3, 1, 4, 1, 5, 1, 2, 1, 3, 1, 4, 1, 5, 1, 5], [1, 2, 1, 2, 1]]
DIL_11_1280 = [[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 5, 1, 7, 1, 3, 1, 5, 1, 5, 1, 7, 1, 7], [1, 3, 1, 3, 1]]
DIL_7 = [[1, 18, 1], [1, 5, 1, 9], [1, 2, 1, 3, 1, 4, 1, 2, 1, 3, 1, 4, 1, 2, 1, 3, 1, 4], [1, 2, 1, 2, 1]]
DINAT_CASES = {
    "ade20k/dinat/oneformer_dinat_large_bs16_160k.yaml": (11, DIL_11, "dinat_large_in22k_in1k_384_11x11.pkl", 250),
    "ade20k/dinat/oneformer_dinat_large_bs16_160k_896x896.yaml":
        (11, DIL_11, "dinat_large_in22k_in1k_384_11x11.pkl", 250),
    "ade20k/dinat/oneformer_dinat_large_bs16_160k_1280x1280.yaml":
        (11, DIL_11_1280, "dinat_large_in22k_in1k_384_11x11.pkl", 250),
    "ade20k/dinat/coco_pretrain_oneformer_dinat_large_bs16_160k_1280x1280.yaml":
        (11, DIL_11_1280, "150_16_dinat_l_oneformer_coco_100ep.pth", 150),
    "cityscapes/dinat/oneformer_dinat_large_bs16_90k.yaml": (7, DIL_7, "dinat_large_in22k_224.pkl", 250),
    "coco/dinat/oneformer_dinat_large_bs16_100ep.yaml": (11, DIL_11, "dinat_large_in22k_in1k_384_11x11.pkl", 150),
    "mapillary_vistas/dinat/oneformer_dinat_large_bs16_300k.yaml":
        (11, DIL_11, "dinat_large_in22k_in1k_384_11x11.pkl", 250),
}


def test_dinat_cases_cover_all_dinat_yamls():
    assert set(DINAT_CASES) == {r for r in _model_yamls() if "/dinat/" in r}


@pytest.mark.parametrize("rel", sorted(DINAT_CASES))
def test_dinat_variants(rel):
    kernel, dilations, weights, queries = DINAT_CASES[rel]
    cfg = _cfg(rel)
    d = cfg.MODEL.DiNAT
    assert cfg.MODEL.BACKBONE.NAME == "D2DiNAT"
    assert (d.EMBED_DIM, d.MLP_RATIO, d.DROP_PATH_RATE) == (192, 2.0, 0.3)
    assert list(d.DEPTHS) == [3, 4, 18, 5] and list(d.NUM_HEADS) == [6, 12, 24, 48]
    assert d.KERNEL_SIZE == kernel
    assert [list(x) for x in d.DILATIONS] == dilations
    # one dilation per block
    assert [len(x) for x in d.DILATIONS] == list(d.DEPTHS)
    assert cfg.MODEL.WEIGHTS == weights
    assert cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES == queries and cfg.TEST.DETECTIONS_PER_IMAGE == queries
    assert not cfg.SOLVER.AMP.ENABLED


# ---------------------------------------------------------------- checkpoint comments and the model_zoo table


@pytest.mark.parametrize("rel", _model_yamls())
def test_checkpoint_comment_matches_model_zoo(rel):
    line = _first_line(rel)
    m = CKPT_RE.match(line)
    assert m, f"{rel}: first line must be '# checkpoint: <URL>' or '# checkpoint: none released', got {line!r}"
    assert rel in model_zoo.MODEL_ZOO
    url = None if m.group(1) == "none released" else m.group(1)
    assert model_zoo.MODEL_ZOO[rel].checkpoint_url == url
    if url is not None:
        folder = m.group(2).split("/")[0]
        assert folder == DATASET_FOLDER[rel.split("/")[0]]
        assert url.endswith(".pth")
        assert model_zoo.get_checkpoint_url(rel) == url
    else:
        with pytest.raises(ValueError):
            model_zoo.get_checkpoint_url(rel)


def test_base_yamls_have_no_checkpoint_comment():
    for rel in _all_yamls():
        if _is_base(rel):
            assert not _first_line(rel).startswith("# checkpoint:"), rel


def test_model_zoo_table_covers_exactly_the_model_yamls():
    assert set(model_zoo.MODEL_ZOO) == set(_model_yamls())
    assert model_zoo.list_configs() == sorted(_model_yamls())


def test_released_checkpoint_count_and_names():
    released = {k: v for k, v in model_zoo.MODEL_ZOO.items() if v.checkpoint_url}
    # ADE 9, Cityscapes 6, COCO 2, Mapillary 3 evaluated + 2 pretraining weights
    assert len(released) == 22
    assert all(v.checkpoint_url is None for k, v in model_zoo.MODEL_ZOO.items() if "R50" in k or "swin_tiny" in k)
    for rel, entry in released.items():
        name = entry.checkpoint_url.rsplit("/", 1)[1]
        queries = _cfg(rel).MODEL.ONE_FORMER.NUM_OBJECT_QUERIES
        assert re.search(rf"(^|_){queries}_16_", name), (rel, name)


def test_metrics():
    zoo = model_zoo.MODEL_ZOO
    assert zoo["ade20k/swin/oneformer_swin_large_bs16_160k.yaml"].metrics == dict(
        PQ=49.8, AP=35.9, mIoU=57.0, mIoU_ms=57.7)
    assert zoo["ade20k/dinat/coco_pretrain_oneformer_dinat_large_bs16_160k_1280x1280.yaml"].metrics["PQ"] == 53.4
    assert zoo["cityscapes/convnext/mapillary_pretrain_oneformer_convnext_xlarge_bs16_90k.yaml"].metrics == dict(
        PQ=69.7, AP=48.9, mIoU=84.5, mIoU_ms=85.8)
    assert zoo["coco/dinat/oneformer_dinat_large_bs16_100ep.yaml"].metrics == dict(
        PQ=58.0, PQ_th=64.3, PQ_st=48.4, AP=49.2, mIoU=68.1)
    assert zoo["mapillary_vistas/swin/oneformer_swin_large_bs16_300k.yaml"].metrics == dict(
        PQ=46.7, mIoU=62.9, mIoU_ms=64.1)
    for rel, entry in zoo.items():
        if entry.checkpoint_url is None:
            assert entry.metrics == {}, rel
        for name, value in entry.metrics.items():
            assert name in {"PQ", "PQ_th", "PQ_st", "AP", "mIoU", "mIoU_ms"} and 0 < value < 100, (rel, name)


def test_get_config_file():
    path = model_zoo.get_config_file("coco/swin/oneformer_swin_large_bs16_100ep.yaml")
    assert os.path.isabs(path) and Path(path) == (CONFIGS / "coco/swin/oneformer_swin_large_bs16_100ep.yaml").resolve()
    assert model_zoo.get_config_file("configs/ade20k/Base-ADE20K-UnifiedSegmentation.yaml").endswith(
        "Base-ADE20K-UnifiedSegmentation.yaml")
    with pytest.raises(FileNotFoundError, match="oneformer_swin_large_bs16_160k.yaml"):
        model_zoo.get_config_file("ade20k/swin/oneformer_swin_large_bs16_160.yaml")


def test_get_checkpoint_url_errors():
    assert model_zoo.get_checkpoint_url("configs/coco/dinat/oneformer_dinat_large_bs16_100ep.yaml") == (
        "https://shi-labs.com/projects/oneformer/coco/150_16_dinat_l_oneformer_coco_100ep.pth")
    with pytest.raises(KeyError, match="oneformer_dinat_large_bs16_100ep.yaml"):
        model_zoo.get_checkpoint_url("coco/dinat/oneformer_dinat_large_bs16_100.yaml")
    with pytest.raises(ValueError, match="no checkpoint"):
        model_zoo.get_checkpoint_url("ade20k/oneformer_R50_bs16_160k.yaml")


# ---------------------------------------------------------------- one-GPU recipes (issue 13)

RECIPES = {  # recipe: (parent, images per iteration)
    "ade20k/swin/oneformer_swin_large_1gpu_24gb.yaml": ("ade20k/swin/oneformer_swin_large_bs16_160k.yaml", 4),
    "cityscapes/swin/oneformer_swin_large_1gpu_24gb.yaml": ("cityscapes/swin/oneformer_swin_large_bs16_90k.yaml", 4),
    "coco/swin/oneformer_swin_large_1gpu_24gb.yaml": ("coco/swin/oneformer_swin_large_bs16_100ep.yaml", 2),
    "mapillary_vistas/swin/oneformer_swin_large_1gpu_24gb.yaml": (
        "mapillary_vistas/swin/oneformer_swin_large_bs16_300k.yaml", 2),
}


def test_one_recipe_per_dataset_family():
    found = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml") if _is_recipe(p.name))
    assert found == sorted(RECIPES)
    assert {r.split("/")[0] for r in found} == set(DATASET_FOLDER)


@pytest.mark.parametrize("rel", sorted(RECIPES))
def test_recipe_scaling(rel):
    """Batch 16 -> b: LR x sqrt(b/16) (AdamW), iterations, steps, warm-up and periods x 16/b (same epochs), the
    parent's crop and model, bfloat16 AMP, activation checkpointing, model_best.pth."""
    import math

    parent_rel, batch = RECIPES[rel]
    cfg, parent = _cfg(rel), _cfg(parent_rel)
    k = parent.SOLVER.IMS_PER_BATCH // batch
    assert parent.SOLVER.IMS_PER_BATCH == 16 and cfg.SOLVER.IMS_PER_BATCH == batch
    assert cfg.SOLVER.BASE_LR == pytest.approx(parent.SOLVER.BASE_LR * math.sqrt(batch / 16), rel=1e-5)
    assert cfg.SOLVER.MAX_ITER * batch == parent.SOLVER.MAX_ITER * 16
    if parent.SOLVER.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        assert tuple(cfg.SOLVER.STEPS) == tuple(s * k for s in parent.SOLVER.STEPS)
        assert cfg.SOLVER.WARMUP_ITERS == parent.SOLVER.WARMUP_ITERS * k
    assert cfg.TEST.EVAL_PERIOD == parent.TEST.EVAL_PERIOD * k
    assert cfg.SOLVER.CHECKPOINT_PERIOD == parent.SOLVER.CHECKPOINT_PERIOD * k
    assert cfg.SOLVER.AMP.ENABLED and cfg.SOLVER.AMP.PRECISION == "bfloat16"
    assert cfg.MODEL.BACKBONE.ACTIVATION_CHECKPOINT and cfg.MODEL.SEM_SEG_HEAD.ENCODER_ACTIVATION_CHECKPOINT
    assert cfg.TEST.BEST_CHECKPOINT.ENABLED
    for node in ("INPUT", "MODEL.SWIN", "MODEL.ONE_FORMER", "DATASETS"):
        a, b = cfg, parent
        for part in node.split("."):
            a, b = a[part], b[part]
        assert a == b, node  # same data pipeline and model as the parent
    assert _first_line(rel).startswith("# recipe: " + parent_rel.rsplit("/", 1)[1])
