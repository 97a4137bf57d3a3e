"""tools/convert_{swin,convnext,dinat}_to_d2.py: official-style ImageNet state dicts -> d2 .pkl that
DetectionCheckpointer loads into ``model.backbone`` by suffix matching."""
import pickle

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone

from oneformer.config import add_oneformer_config_all
from tests.tiny import load_script

def _tiny_backbone(kind, seed):
    torch.manual_seed(seed)
    cfg = add_oneformer_config_all(get_cfg())
    if kind == "swin":
        cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
        cfg.MODEL.SWIN.EMBED_DIM = 16
        cfg.MODEL.SWIN.DEPTHS = [2, 2, 2, 2]
        cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 2, 4]
        cfg.MODEL.SWIN.WINDOW_SIZE = 4
    elif kind == "convnext":
        cfg.MODEL.BACKBONE.NAME = "D2ConvNeXt"
        cfg.MODEL.CONVNEXT.DEPTHS = [1, 1, 2, 1]
        cfg.MODEL.CONVNEXT.DIMS = [8, 16, 24, 32]
    else:
        cfg.MODEL.BACKBONE.NAME = "D2DiNAT"
        cfg.MODEL.DiNAT.EMBED_DIM = 16
        cfg.MODEL.DiNAT.MLP_RATIO = 2.0
        cfg.MODEL.DiNAT.DEPTHS = [1, 2, 1, 1]
        cfg.MODEL.DiNAT.NUM_HEADS = [1, 2, 2, 4]
        cfg.MODEL.DiNAT.KERNEL_SIZE = 3
        cfg.MODEL.DiNAT.DILATIONS = [[2], [1, 3], [2], [1]]
    return build_backbone(cfg)


class _Wrapper(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def _official_state_dict(kind, backbone, with_output_norms=True):
    """What the official classification checkpoint holds: the backbone weights (optionally without the per-output
    norm0..3, which real ImageNet files do not have) plus the classifier norm/head (+ Swin's attn_mask buffers)."""
    sd = {k: v.clone() for k, v in backbone.state_dict().items()}
    if not with_output_norms:
        sd = {k: v for k, v in sd.items() if not k.startswith(("norm0.", "norm1.", "norm2.", "norm3."))}
    last = {"swin": 128, "convnext": 32, "dinat": 128}[kind]
    sd["norm.weight"] = torch.randn(last)
    sd["norm.bias"] = torch.randn(last)
    sd["head.weight"] = torch.randn(10, last)
    sd["head.bias"] = torch.randn(10)
    if kind == "swin":
        sd["layers.0.blocks.1.attn_mask"] = torch.zeros(4, 16, 16)
    return sd


CASES = [
    ("swin", "convert_swin_to_d2", "model"),
    ("convnext", "convert_convnext_to_d2", "model"),
    ("dinat", "convert_dinat_to_d2", "state_dict"),
    ("dinat", "convert_dinat_to_d2", "model"),
    ("dinat", "convert_dinat_to_d2", None),  # bare state dict
]


def _load_into_fresh(kind, pkl):
    model = _Wrapper(_tiny_backbone(kind, seed=123))
    checkpointer = DetectionCheckpointer(model)
    checkpoint = checkpointer._load_file(str(pkl))
    incompatible = checkpointer._load_model(checkpoint)
    return model, incompatible


@pytest.mark.parametrize("kind,tool,wrap", CASES)
def test_converter_roundtrip(tmp_path, kind, tool, wrap):
    src = _tiny_backbone(kind, seed=0)
    official = _official_state_dict(kind, src)
    pth = tmp_path / "official.pth"
    torch.save(official if wrap is None else {wrap: official, "epoch": 300}, pth)
    pkl = tmp_path / "converted.pkl"
    assert load_script(tool, "tools").main([str(pth), str(pkl)]) == 0

    with open(pkl, "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "third_party" and data["matching_heuristics"] is True
    assert all(isinstance(v, np.ndarray) for v in data["model"].values())
    assert not any(k.startswith(("head.", "norm.")) or k.endswith("attn_mask") for k in data["model"])
    assert set(data["model"]) == set(src.state_dict())

    model, incompatible = _load_into_fresh(kind, pkl)
    assert incompatible.missing_keys == []
    assert incompatible.unexpected_keys == []
    for name, value in src.state_dict().items():
        loaded = model.backbone.state_dict()[name]
        assert loaded.dtype == value.dtype, name
        torch.testing.assert_close(loaded, value, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("kind,tool", [("swin", "convert_swin_to_d2"), ("convnext", "convert_convnext_to_d2"),
                                       ("dinat", "convert_dinat_to_d2")])  # fmt: skip
def test_real_imagenet_layout_only_output_norms_missing(tmp_path, kind, tool):
    src = _tiny_backbone(kind, seed=0)
    pth = tmp_path / "official.pth"
    torch.save({"model": _official_state_dict(kind, src, with_output_norms=False)}, pth)
    pkl = tmp_path / "converted.pkl"
    load_script(tool, "tools").main([str(pth), str(pkl)])
    _, incompatible = _load_into_fresh(kind, pkl)
    expected = sorted(f"backbone.norm{i}.{p}" for i in range(4) for p in ("weight", "bias"))
    assert sorted(incompatible.missing_keys) == expected
    assert incompatible.unexpected_keys == []


@pytest.mark.parametrize("tool", ["convert_swin_to_d2", "convert_convnext_to_d2", "convert_dinat_to_d2"])
def test_converter_errors(tmp_path, tool):
    mod = load_script(tool, "tools")
    out = str(tmp_path / "out.pkl")
    with pytest.raises(SystemExit, match="does not exist"):
        mod.main([str(tmp_path / "missing.pth"), out])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(SystemExit, match="cannot read"):
        mod.main([str(garbage), out])
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": {"some.other.weight": torch.zeros(2)}}, wrong)
    with pytest.raises(SystemExit, match="does not look like"):
        mod.main([str(wrong), out])
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(SystemExit, match="contains no tensors"):
        mod.main([str(empty), out])
    assert not (tmp_path / "out.pkl").exists()
