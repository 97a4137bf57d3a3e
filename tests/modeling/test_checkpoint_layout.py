"""The model built from each reference config has exactly the original release's state_dict names and shapes.

tests/reference_layouts holds (gzipped, as documented in the project's spec) the layouts of 7 configs, each as a training
build (text branch) and an inference build (MODEL.IS_TRAIN False): 14 checks, plus the parameter counts. Models are
built on the meta device, so nothing is allocated.
"""
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import META_ARCH_REGISTRY

import oneformer  # noqa: F401  (registers the components)
from oneformer import add_oneformer_config_all
from tests.reference import load_reference

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (reference name, config) — the configs named in param_counts.json
CONFIGS = {
    "ade20k_swin_large": "configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml",
    "cityscapes_convnext_large": "configs/cityscapes/convnext/oneformer_convnext_large_bs16_90k.yaml",
    "coco_swin_large": "configs/coco/swin/oneformer_swin_large_bs16_100ep.yaml",
    "ade20k_R50": "configs/ade20k/oneformer_R50_bs16_160k.yaml",
    "cityscapes_R50": "configs/cityscapes/oneformer_R50_bs16_90k.yaml",
    "coco_R50": "configs/coco/oneformer_R50_bs16_50ep.yaml",
    "mapillary_vistas_R50": "configs/mapillary_vistas/oneformer_R50_bs16_300k.yaml",
}



def build_meta(config: str, is_train: bool):
    cfg = add_oneformer_config_all(get_cfg())
    cfg.merge_from_file(os.path.join(REPO, config))
    cfg.MODEL.IS_TRAIN = is_train
    with torch.device("meta"):
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)


@pytest.mark.parametrize("is_train", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_matches_reference(name, is_train):
    suffix = "" if is_train else "_infer"
    expected = {k: (tuple(shape), dtype) for k, shape, dtype in load_reference(f"keys_{name}{suffix}.json")}
    model = build_meta(CONFIGS[name], is_train)
    got = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    assert not missing and not unexpected, f"missing {missing[:10]} ({len(missing)}), unexpected {unexpected[:10]} ({len(unexpected)})"
    wrong = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert not wrong, f"{len(wrong)} entries differ, e.g. {list(wrong.items())[:5]}"
    counts = load_reference("param_counts.json")[name]["is_train" if is_train else "inference"]
    assert sum(p.numel() for p in model.parameters()) == counts["total_params"]
