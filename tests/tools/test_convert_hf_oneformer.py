"""tools/convert_hf_oneformer.py: our (original-layout) OneFormer checkpoints <-> transformers'
OneFormerForUniversalSegmentation.

The parity tests build transformers' model from a tiny config with random (seeded, perturbed) weights, convert them
with ``hf_to_ours``, load them strictly into our model built from the converted cfg, and compare class and mask logits
in float64 on the same normalized batch and the same task token ids, for the three tasks.

Known differences between transformers' implementation and the original that these tests work around (they are not
conversion issues):
* transformers' pixel-decoder encoder layers apply dropout whenever ``config.is_training`` is True, even in eval()
  (``training=self.is_training``); the text-branch variant therefore uses ``dropout=0.0``.
* transformers' text encoder never passes its causal mask to the attention (``OneFormerTextTransformerLayer`` stores
  ``attn_mask`` but calls ``self_attn`` without it), while the original (and ours) is causal: the text-branch weight
  mapping is checked against our encoder with the causal mask removed.
"""
import math
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", minversion="5.20")

import oneformer  # noqa: E402,F401  (registers the components)
from detectron2.modeling import build_model  # noqa: E402
from transformers import (  # noqa: E402
    ConvNextConfig,
    OneFormerConfig,
    OneFormerForUniversalSegmentation,
    SwinConfig,
)

from oneformer import add_oneformer_config_all  # noqa: E402
from oneformer.data.tokenizer import TASKS  # noqa: E402
from tests.reference import load_reference  # noqa: E402
from tests.tiny import load_script  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
H, W = 64, 96
TOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The models are tiny: intra-op threading only adds overhead (10x on a 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


conv = load_script("convert_hf_oneformer", "tools")


# ----------------------------------------------------------------------------------------------------------------
# tiny transformers models


def _tiny_hf_config(backbone="swin", is_training=False, **overrides):
    if backbone == "swin":
        # window 3 on a 64x96 input: every stage is padded to a multiple of the window, and shifted windows run on
        # stages 1-3 (stage 4 is 2x3)
        bb = SwinConfig(embed_dim=16, depths=[2, 2, 2, 1], num_heads=[1, 2, 2, 4], window_size=3,
                        drop_path_rate=0.0, out_features=["stage1", "stage2", "stage3", "stage4"])
    else:
        bb = ConvNextConfig(hidden_sizes=[16, 24, 32, 40], depths=[1, 1, 2, 1], layer_scale_init_value=0.5,
                            drop_path_rate=0.0, out_features=["stage1", "stage2", "stage3", "stage4"])
    kwargs = dict(
        backbone_config=bb, num_labels=5, num_queries=6, conv_dim=64, mask_dim=64, hidden_dim=64,
        # our pixel decoder's FFN width is fixed at 1024 (as in the original)
        encoder_feedforward_dim=1024, encoder_layers=2, decoder_layers=5, query_dec_layers=2,
        num_attention_heads=4, dim_feedforward=96, is_training=is_training,
        # see the module docstring: transformers applies pixel-decoder dropout in eval() when is_training is True
        dropout=0.0 if is_training else 0.1,
        text_encoder_width=64, text_encoder_num_layers=2, text_encoder_proj_layers=2, text_encoder_n_ctx=2,
    )
    kwargs.update(overrides)
    return OneFormerConfig(**kwargs)


@torch.no_grad()
def _perturb(model, seed):
    """Move every parameter away from its initialization (norm weights/biases, zero-initialized offsets, level
    embeddings, ...), so that a swapped or dropped tensor shows in the outputs. HF's unused swin.layernorm keeps its
    init (the converter re-creates it with ones/zeros)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if ".swin.layernorm." in name:
            continue
        scale = 0.2 if p.dim() <= 1 else 0.02
        p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _tiny_hf(seed=0, **kw):
    torch.manual_seed(seed)
    config = _tiny_hf_config(**kw)
    model = OneFormerForUniversalSegmentation(config).eval()
    _perturb(model, seed + 1)
    return config, model


def _ours_from_hf(hf_config, hf_model):
    sd, cfg = conv.hf_to_ours(hf_model.state_dict(), hf_config)
    cfg.MODEL.DEVICE = "cpu"
    ours = build_model(cfg).eval()
    result = ours.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ours, cfg, sd


def _batch(seed=3):
    g = torch.Generator().manual_seed(seed)
    # already normalized and padded (64x96 is a multiple of 32): our backbone input == HF pixel_values
    return torch.randn(2, 3, H, W, generator=g, dtype=torch.float64)


def _text_tokens(seed=4, n=4):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(1, 49406, (2, n, 77), generator=g)
    text[..., 0] = 49406  # SOT
    text[..., 9] = 49407  # EOT (the largest id: the pooled position)
    text[..., 10:] = 0
    return text


def _run_both(hf_model, ours, task, text=None):
    x = _batch()
    ids = ours.task_token_ids(task)[None].repeat(2, 1)  # the same 77 CLIP ids as HF's task_inputs
    with torch.no_grad():
        kw = {} if text is None else {"text_inputs": text}
        ho = hf_model(pixel_values=x, task_inputs=ids.to(torch.float64),
                      pixel_mask=torch.ones(2, H, W, dtype=torch.long), **kw)
        # model.encode_tasks casts the ids to float32; in float64 feed the task MLP directly (same computation)
        tasks = ours.task_mlp(ids.to(torch.float64))
        out = ours.sem_seg_head(ours.backbone(x), tasks)
    return ho, out


def _max_abs(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def _assert_parity(hf_config, hf_model, text=None):
    ours, _, _ = _ours_from_hf(hf_config, hf_model)
    assert not ours.training and not hf_model.training
    hf_model.double()
    ours.double()
    for task in TASKS:
        ho, out = _run_both(hf_model, ours, task, text)
        assert out["pred_logits"].shape == (2, hf_config.num_queries, hf_config.num_labels + 1)
        assert out["pred_masks"].shape == (2, hf_config.num_queries, H // 4, W // 4)
        d_cls = _max_abs(ho.class_queries_logits, out["pred_logits"])
        d_mask = _max_abs(ho.masks_queries_logits, out["pred_masks"])
        assert d_cls < TOL and d_mask < TOL, f"{task}: class logits {d_cls:.3g}, mask logits {d_mask:.3g}"
        # the masks are not trivially saturated or constant
        assert out["pred_masks"].std() > 0.1
        if hf_config.is_training:
            d = _max_abs(ho.transformer_decoder_contrastive_queries, out["contrastive_logits"])
            assert d < TOL, f"{task}: contrastive queries {d:.3g}"
    return ours


# ----------------------------------------------------------------------------------------------------------------
# output parity


@pytest.mark.parametrize("is_training", [False, True], ids=["infer", "text_branch"])
def test_parity_swin(is_training):
    config, hf_model = _tiny_hf(seed=0, is_training=is_training)
    text = _text_tokens() if is_training else None  # transformers' forward needs text inputs when is_training
    ours = _assert_parity(config, hf_model, text)
    assert (ours.text_encoder is not None) == is_training


def test_parity_convnext():
    config, hf_model = _tiny_hf(seed=10, backbone="convnext")
    _assert_parity(config, hf_model)


def test_parity_without_task_norm():
    config, hf_model = _tiny_hf(seed=20, use_task_norm=False)
    _assert_parity(config, hf_model)


def test_text_branch_weights():
    """Every text-branch tensor lands in the right place: transformers' text queries equal ours (with our causal mask
    removed, see the module docstring)."""
    config, hf_model = _tiny_hf(seed=30, is_training=True)
    ours, _, _ = _ours_from_hf(config, hf_model)
    hf_model.double()
    ours.double()
    text = _text_tokens(seed=5, n=config.num_queries - config.text_encoder_n_ctx)
    ho, _ = _run_both(hf_model, ours, "panoptic", text)
    with torch.no_grad():
        causal = ours.encode_text(text)
        ours.text_encoder.attn_mask.zero_()
        non_causal = ours.encode_text(text)
    assert ho.text_queries.shape == non_causal.shape == (2, config.num_queries, config.hidden_dim)
    assert _max_abs(ho.text_queries, non_causal) < TOL
    # the original's causal encoder gives different text queries than transformers' (documented difference)
    assert _max_abs(ho.text_queries, causal) > 1e-3


# ----------------------------------------------------------------------------------------------------------------
# state-dict round trips


def _assert_same_state(a, b):
    assert set(a) == set(b), (sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5])
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("kw", [dict(is_training=False), dict(is_training=True), dict(backbone="convnext")],
                         ids=["swin_infer", "swin_text_branch", "convnext"])
def test_round_trip_exact(kw):
    config, hf_model = _tiny_hf(seed=40, **kw)
    ref = hf_model.state_dict()
    notes = {}
    sd, cfg = conv.hf_to_ours(ref, config, notes=notes)
    if config.backbone_config.model_type == "swin":
        assert set(notes) == {conv.HF_BACKBONE + "swin.layernorm.weight", conv.HF_BACKBONE + "swin.layernorm.bias"}
        assert all("not used by SwinBackbone" in v for v in notes.values())
    config2, back = conv.ours_to_hf(sd, cfg)
    _assert_same_state(back, ref)
    # the config survives the trip too
    for key in ("num_labels", "num_queries", "hidden_dim", "conv_dim", "mask_dim", "decoder_layers", "encoder_layers",
                "query_dec_layers", "num_attention_heads", "dim_feedforward", "is_training", "use_task_norm",
                "text_encoder_width", "text_encoder_num_layers", "text_encoder_n_ctx", "task_seq_len", "common_stride",
                "contrastive_temperature", "no_object_weight", "class_weight", "mask_weight", "dice_weight",
                "dropout"):
        assert getattr(config, key) == getattr(config2, key), key
    for key in ("model_type", "depths", "out_features", "drop_path_rate"):
        assert getattr(config.backbone_config, key) == getattr(config2.backbone_config, key), key


def _our_tiny_cfg(backbone):
    config = _tiny_hf_config(is_training=True)
    cfg = conv.cfg_from_oneformer_config(config)
    cfg.MODEL.DEVICE = "cpu"
    if backbone == "dinat":
        cfg.MODEL.BACKBONE.NAME = "D2DiNAT"
        cfg.MODEL.DiNAT.EMBED_DIM = 16
        cfg.MODEL.DiNAT.MLP_RATIO = 2.0
        cfg.MODEL.DiNAT.DEPTHS = [1, 2, 1, 1]
        cfg.MODEL.DiNAT.NUM_HEADS = [1, 2, 2, 4]
        cfg.MODEL.DiNAT.KERNEL_SIZE = 3
        cfg.MODEL.DiNAT.DILATIONS = [[2], [1, 3], [2], [1]]
    return cfg


@pytest.mark.parametrize("backbone", ["swin", "dinat"])
def test_ours_round_trip_exact(backbone):
    """ours -> HF -> ours reproduces our state dict (incl. Swin's relative_position_index buffers); DiNAT is checked
    this way only, as transformers' DiNAT needs the natten package to be built."""
    cfg = _our_tiny_cfg(backbone)
    torch.manual_seed(50)
    ours = build_model(cfg)
    ref = ours.state_dict()
    config, hf_sd = conv.ours_to_hf(ref, cfg, check=backbone != "dinat")
    assert config.backbone_config.model_type == backbone
    back, cfg2 = conv.hf_to_ours(hf_sd, config)
    _assert_same_state(back, ref)
    assert cfg2.MODEL.BACKBONE.NAME == cfg.MODEL.BACKBONE.NAME
    if backbone == "dinat":
        assert list(cfg2.MODEL.DiNAT.DILATIONS) == [[2], [1, 3], [2], [1]]
        assert any(k.endswith("attention.self.rpb") for k in hf_sd)


@pytest.mark.parametrize("name,config_file", [
    ("ade20k_swin_large", "configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml"),
    ("cityscapes_convnext_large", "configs/cityscapes/convnext/oneformer_convnext_large_bs16_90k.yaml"),
])
@pytest.mark.parametrize("is_train", [True, False], ids=["train", "infer"])
def test_release_layout(name, config_file, is_train):
    """The full-size release layouts (from the spec's reference key lists, on the meta device) map onto transformers'
    model layout (names and shapes) and back; with MODEL.IS_TRAIN False the checkpoint's text keys are ignored."""
    from detectron2.config import get_cfg

    layout = load_reference(f"keys_{name}.json")
    cfg = add_oneformer_config_all(get_cfg())
    cfg.merge_from_file(str(REPO / config_file))
    cfg.MODEL.IS_TRAIN = is_train
    sd = {}
    for key, shape, dtype in layout:
        if key.endswith("relative_position_index"):
            sd[key] = conv._swin_index(cfg.MODEL.SWIN.WINDOW_SIZE)
        else:
            sd[key] = torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
    notes = {}
    config, hf_sd = conv.ours_to_hf(sd, cfg, notes=notes)  # checked against transformers' layout
    assert config.num_queries == cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES
    assert config.num_labels == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    ignored_text = {k for k, v in notes.items() if k.startswith(conv.OURS_TEXT_PREFIXES)}
    if is_train:
        assert not ignored_text
    else:
        assert ignored_text == {k for k in sd if k.startswith(conv.OURS_TEXT_PREFIXES)} and len(ignored_text) == 81
    back, _ = conv.hf_to_ours(hf_sd, config)  # checked against our model's layout
    expected = {k: tuple(s) for k, s, _ in layout if is_train or not k.startswith(conv.OURS_TEXT_PREFIXES)}
    assert {k: tuple(v.shape) for k, v in back.items()} == expected


# ----------------------------------------------------------------------------------------------------------------
# errors


def test_unknown_keys_are_named():
    config, hf_model = _tiny_hf(seed=60)
    sd, cfg = conv.hf_to_ours(hf_model.state_dict(), config)
    bad = dict(sd)
    bad["sem_seg_head.predictor.mystery_layer.weight"] = torch.zeros(3)
    with pytest.raises(conv.ConversionError, match=r"sem_seg_head\.predictor\.mystery_layer\.weight"):
        conv.ours_to_hf(bad, cfg)
    hf_bad = dict(hf_model.state_dict())
    hf_bad["model.transformer_module.decoder.extra.bias"] = torch.zeros(3)
    with pytest.raises(conv.ConversionError, match=r"model\.transformer_module\.decoder\.extra\.bias"):
        conv.hf_to_ours(hf_bad, config)
    missing = dict(sd)
    del missing["sem_seg_head.predictor.class_embed.bias"]
    with pytest.raises(conv.ConversionError, match=r"missing.*sem_seg_head\.predictor\.class_embed\.bias"):
        conv.ours_to_hf(missing, cfg)


def test_criterion_recreated_when_absent():
    config, hf_model = _tiny_hf(seed=61)
    sd, cfg = conv.hf_to_ours(hf_model.state_dict(), config)
    del sd["criterion.logit_scale"], sd["criterion.empty_weight"]
    notes = {}
    _, hf_sd = conv.ours_to_hf(sd, cfg, notes=notes)
    assert "criterion.logit_scale" in notes and "criterion.empty_weight" in notes
    assert math.isclose(hf_sd["criterion.logit_scale"].item(), math.log(1 / 0.07), rel_tol=1e-6)
    assert hf_sd["criterion.empty_weight"].tolist() == pytest.approx([1.0] * 5 + [0.1])


def test_unsupported_settings_raise():
    config, hf_model = _tiny_hf(seed=62)
    _, cfg = conv.hf_to_ours(hf_model.state_dict(), config)
    for key, value, pattern in [
        ("MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.NAME"),
        ("MODEL.SEM_SEG_HEAD.CONVS_DIM", 128, "CONVS_DIM"),
        ("MODEL.ONE_FORMER.PRE_NORM", True, "PRE_NORM"),
        ("MODEL.SWIN.APE", True, "APE"),
        ("MODEL.SEM_SEG_HEAD.NORM", "BN", "NORM"),
    ]:
        bad = cfg.clone()
        bad.merge_from_list([key, value])
        with pytest.raises(NotImplementedError, match=pattern):
            conv.oneformer_config_from_cfg(bad)
    with pytest.raises(NotImplementedError, match="encoder_feedforward_dim"):
        conv.cfg_from_oneformer_config(_tiny_hf_config(encoder_feedforward_dim=512))
    with pytest.raises(NotImplementedError, match="pre_norm"):
        conv.cfg_from_oneformer_config(_tiny_hf_config(pre_norm=True))


# ----------------------------------------------------------------------------------------------------------------
# command line


def test_cli_round_trip(tmp_path):
    config, hf_model = _tiny_hf(seed=70, is_training=True)
    ref = hf_model.state_dict()
    hf_dir = tmp_path / "hf"
    hf_model.save_pretrained(str(hf_dir))  # on disk the Swin keys use transformers' legacy names

    ours_pth = tmp_path / "ours.pth"
    ours_yaml = tmp_path / "ours.yaml"
    assert conv.main(["--from-hf", "--input", str(hf_dir), "--output", str(ours_pth), "--output-config",
                      str(ours_yaml), "MODEL.TEST.OBJECT_MASK_THRESHOLD", "0.5"]) == 0
    ckpt = torch.load(str(ours_pth), map_location="cpu", weights_only=True)
    assert set(ckpt) == {"model"} and all(torch.is_tensor(v) for v in ckpt["model"].values())
    expected, _ = conv.hf_to_ours(ref, config)
    _assert_same_state(ckpt["model"], expected)

    from detectron2.config import get_cfg

    cfg = add_oneformer_config_all(get_cfg())
    cfg.merge_from_file(str(ours_yaml))
    assert cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD == 0.5 and cfg.MODEL.IS_TRAIN
    cfg.MODEL.DEVICE = "cpu"
    build_model(cfg).load_state_dict(ckpt["model"], strict=True)

    # back to HF, from a d2-style checkpoint that also carries trainer state
    torch.save({"model": ckpt["model"], "iteration": 7}, str(tmp_path / "ours_trainer.pth"))
    hf_dir2 = tmp_path / "hf2"
    assert conv.main(["--to-hf", "--config-file", str(ours_yaml), "--input", str(tmp_path / "ours_trainer.pth"),
                      "--output", str(hf_dir2)]) == 0
    assert (hf_dir2 / "config.json").is_file() and (hf_dir2 / "model.safetensors").is_file()
    reloaded = OneFormerForUniversalSegmentation.from_pretrained(str(hf_dir2))
    _assert_same_state(reloaded.state_dict(), ref)
    assert reloaded.config.is_training and reloaded.config.num_queries == config.num_queries


def test_cli_unknown_key_fails(tmp_path):
    config, hf_model = _tiny_hf(seed=71)
    sd, cfg = conv.hf_to_ours(hf_model.state_dict(), config)
    sd["backbone.layers.0.blocks.0.attn.unexpected_buffer"] = torch.zeros(2)
    torch.save({"model": sd}, str(tmp_path / "bad.pth"))
    (tmp_path / "cfg.yaml").write_text(cfg.dump())
    with pytest.raises(conv.ConversionError, match=r"backbone\.layers\.0\.blocks\.0\.attn\.unexpected_buffer"):
        conv.main(["--to-hf", "--config-file", str(tmp_path / "cfg.yaml"), "--input", str(tmp_path / "bad.pth"),
                   "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_saved_and_legacy_hf_names(tmp_path):
    """``save_pretrained`` files (and transformers 4.x hub checkpoints) name the Swin backbone the legacy way
    (``encoder.encoder.*``, ``attention.self.query``, ``intermediate.dense``, persistent relative_position_index)."""
    config, hf_model = _tiny_hf(seed=80)
    hf_model.save_pretrained(str(tmp_path))
    config2, on_disk = conv.load_hf_dir(str(tmp_path))
    assert any(".attention.self.query." in k for k in on_disk)  # really the legacy layout
    expected, _ = conv.hf_to_ours(hf_model.state_dict(), config)
    got, _ = conv.hf_to_ours(on_disk, config2)
    _assert_same_state(got, expected)
    legacy = dict(on_disk)
    key = conv.HF_BACKBONE + "encoder.layers.0.blocks.0.attention.self.relative_position_index"
    legacy[key] = conv._swin_index(config.backbone_config.window_size)
    notes = {}
    got, _ = conv.hf_to_ours(legacy, config2, notes=notes)
    _assert_same_state(got, expected)
    assert key in notes
    legacy[key] = legacy[key].flip(0)
    with pytest.raises(conv.ConversionError, match="relative position index"):
        conv.hf_to_ours(legacy, config2)
