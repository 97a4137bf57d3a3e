"""The OneFormer meta-architecture end to end on a tiny config: inference for every task, training losses."""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Instances

from oneformer.oneformer_model import task_string
from tests.tiny import NUM_CLASSES, THING_IDS, tiny_cfg


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD = 0.0  # keep every query so panoptic/instance results are not empty
    m = build_model(cfg)
    m.eval()
    return m


def _image(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def test_inference_outputs_for_every_task(model):
    inputs = [
        {"image": _image(64, 96), "task": "The task is panoptic"},
        {"image": _image(80, 50, 1), "task": "semantic", "height": 160, "width": 100},
        {"image": _image(40, 40, 2), "task": "instance"},
    ]
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 3
    for out, (h, w) in zip(outputs, [(64, 96), (160, 100), (40, 40)]):
        assert set(out) == {"sem_seg", "panoptic_seg", "instances"}
        assert out["sem_seg"].shape == (NUM_CLASSES, h, w)
        pan, segments = out["panoptic_seg"]
        assert pan.shape == (h, w) and pan.dtype == torch.int32
        ids = set(pan.unique().tolist()) - {0}
        assert ids == {s["id"] for s in segments}
        for s in segments:
            assert s["isthing"] == (s["category_id"] in THING_IDS)
        inst = out["instances"]
        assert inst.image_size == (h, w)
        assert inst.pred_masks.shape[1:] == (h, w)
        assert set(inst.pred_classes.tolist()) <= set(THING_IDS)
        assert ((inst.scores >= 0) & (inst.scores <= 1)).all()


def test_task_token_conditions_the_queries(model):
    image = _image(64, 64)
    logits = {}
    for task in ("semantic", "instance", "panoptic"):
        images = model.preprocess_image([{"image": image}])
        tasks = model.encode_tasks([{"image": image, "task": task}])
        with torch.no_grad():
            logits[task] = model.sem_seg_head(model.backbone(images.tensor), tasks)["pred_logits"]
    assert not torch.allclose(logits["semantic"], logits["panoptic"])
    assert not torch.allclose(logits["instance"], logits["panoptic"])


def test_batch_equals_single_images(model):
    a, b = _image(64, 64, 3), _image(64, 64, 4)
    with torch.no_grad():
        both = model([{"image": a, "task": "panoptic"}, {"image": b, "task": "semantic"}])
        one = model([{"image": b, "task": "semantic"}])
    assert torch.allclose(both[1]["sem_seg"], one[0]["sem_seg"], atol=1e-5)


@pytest.mark.parametrize("bad", ["panoptics", "The task is depth", "", 3])
def test_unknown_task_is_rejected(model, bad):
    with pytest.raises(ValueError, match="task"):
        model([{"image": _image(32, 32), "task": bad}])


def test_task_string_normalization():
    assert task_string("panoptic") == "The task is panoptic"
    assert task_string(" The task is Semantic ") == "The task is semantic"
    assert task_string("the task is instance") == "The task is instance"


def test_bad_image_is_rejected(model):
    with pytest.raises(ValueError, match=r"batched_inputs\[0\]\['image'\] must be a \(3, H, W\)"):
        model([{"image": torch.zeros(32, 32, 3, dtype=torch.uint8)}])
    with pytest.raises(KeyError, match="no 'image'"):
        model([{"file_name": "x.jpg"}])


def test_missing_metadata_is_explained():
    cfg = tiny_cfg()
    cfg.DATASETS.TRAIN = ("oneformer_never_registered",)
    m = build_model(cfg).eval()
    with pytest.raises(RuntimeError, match="thing_dataset_id_to_contiguous_id"):
        m([{"image": _image(64, 64)}])
    # semantic segmentation alone needs no thing/stuff split
    cfg.MODEL.TEST.PANOPTIC_ON = False
    cfg.MODEL.TEST.INSTANCE_ON = False
    m = build_model(cfg).eval()
    with torch.no_grad():
        out = m([{"image": _image(64, 64)}])
    assert set(out[0]) == {"sem_seg"}


def _training_inputs():
    inputs = []
    for seed, (h, w) in enumerate([(64, 64), (64, 64)]):
        inst = Instances((h, w))
        masks = torch.zeros(3, h, w, dtype=torch.bool)
        masks[0, : h // 2] = True
        masks[1, h // 2:, : w // 2] = True
        masks[2, h // 2:, w // 2:] = True
        inst.gt_classes = torch.tensor([0, 3, 4])
        inst.gt_masks = masks
        image = _image(h, w, seed)
        image[:, : h // 2] //= 4  # make the regions visible in the image
        inputs.append({"image": image, "task": "The task is panoptic", "instances": inst,
                       "text": ["a photo with a class0", "a photo with a class3", "a photo with a class4",
                                "a panoptic photo", "a panoptic photo", "a panoptic photo"]})
    return inputs


def test_training_losses_decrease():
    torch.manual_seed(0)
    cfg = tiny_cfg(is_train=True)
    model = build_model(cfg)
    model.train()
    inputs = _training_inputs()
    losses = model(inputs)
    # final + 3 auxiliary predictions (DEC_LAYERS 4) × (ce, mask, dice) + contrastive
    assert len(losses) == 4 * 3 + 1 and "loss_contrastive" in losses and "loss_dice_2" in losses
    assert all(torch.isfinite(v) for v in losses.values())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(12):
        losses = model(inputs)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    assert sum(history[-3:]) / 3 < 0.8 * sum(history[:3]) / 3, history
    # the text branch and the learnable temperature receive gradients
    assert model.text_encoder.token_embedding.weight.grad.abs().sum() > 0
    assert model.criterion.logit_scale.grad is not None


def test_training_requires_targets():
    model = build_model(tiny_cfg(is_train=True)).train()
    with pytest.raises(KeyError, match="instances"):
        model([{"image": _image(32, 32)}])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a visible GPU")
@pytest.mark.parametrize("precision", ["fp32", "autocast"])
def test_cuda_matches_cpu(precision):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_PRECISION = precision
    cpu = build_model(cfg).eval()
    cfg.MODEL.DEVICE = "cuda"
    gpu = build_model(cfg).eval()
    gpu.load_state_dict(cpu.state_dict())
    inputs = [{"image": _image(64, 96), "task": "panoptic"}, {"image": _image(72, 64, 1), "task": "instance"}]
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    # TF32 convolutions (cuDNN's default) alone differ from the CPU by ~1e-3
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            a = cpu(inputs)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "autocast"):
                b = gpu(inputs)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    tol = 1e-3 if precision == "fp32" else 5e-2
    for x, y in zip(a, b):
        assert (x["sem_seg"] - y["sem_seg"].float().cpu()).abs().max() < tol
        if precision == "fp32":
            agree = (x["panoptic_seg"][0] == y["panoptic_seg"][0].cpu()).float().mean()
            assert agree > 0.99


def test_inputs_can_ask_for_a_subset_of_outputs(model):
    image = _image(64, 64)
    with torch.no_grad():
        out = model([{"image": image, "task": "instance", "outputs": ["instances"]},
                     {"image": image, "task": "semantic", "outputs": ("sem_seg",)}])
        full = model([{"image": image, "task": "instance"}])
    assert set(out[0]) == {"instances"} and set(out[1]) == {"sem_seg"}
    # the instance rules (thing classes only) do not depend on which outputs are asked for
    assert torch.equal(out[0]["instances"].pred_classes.sort().values, full[0]["instances"].pred_classes.sort().values)
    with pytest.raises(ValueError, match="unknown entries"):
        model([{"image": image, "outputs": ["depth"]}])


def test_panoptic_rule_is_configurable(model):
    """MODEL.TEST.PANOPTIC_RULE picks the panoptic rule (the rules themselves: tests/modeling/test_inference.py)."""
    image = _image(64, 96)
    with torch.no_grad():
        original = model([{"image": image, "outputs": ["panoptic_seg"]}])[0]["panoptic_seg"]
        model.panoptic_rule = "transformers"
        try:
            hf = model([{"image": image, "outputs": ["panoptic_seg"]}])[0]["panoptic_seg"]
        finally:
            model.panoptic_rule = "original"
    # the random model's class probabilities are low: transformers' rule, measuring a query's own area on
    # probability x mask, finds no area and keeps nothing, while the original rule keeps segments
    assert original[1] and (original[0] != 0).any()
    assert hf[1] == [] and not (hf[0] != 0).any()
    cfg = tiny_cfg()
    cfg.MODEL.TEST.PANOPTIC_RULE = "mask2former"
    with pytest.raises(ValueError, match="MODEL.TEST.PANOPTIC_RULE"):
        build_model(cfg)


def test_float_image_in_0_1_is_refused(model):
    image = _image(64, 64)
    with torch.no_grad(), pytest.raises(ValueError, match=r"batched_inputs\[1\]\['image'\] is a float image with "
                                                          r"values in \[0, 1\] .*multiply it by 255"):
        model([{"image": image}, {"image": image.float() / 255}])  # normalized as 0..255 it would be black
    with torch.no_grad():
        as_float = model([{"image": image.float(), "task": "semantic"}])[0]["sem_seg"]  # float 0..255: accepted
        as_uint8 = model([{"image": image, "task": "semantic"}])[0]["sem_seg"]
        model([{"image": torch.zeros(3, 64, 64)}])  # integral values: a black image, not a [0, 1] one
    assert torch.allclose(as_float, as_uint8)


def test_semantic_only_training_data_gives_semantic_outputs(unique_prefix, caplog):
    """A model whose DATASETS.TRAIN[0] is a registered semantic-only dataset (stuff classes, no thing map)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = unique_prefix + "sem_only"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(stuff_classes=[f"c{i}" for i in range(NUM_CLASSES)], evaluator_type="sem_seg")
    cfg = tiny_cfg()
    cfg.DATASETS.TRAIN = (name,)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad(), caplog.at_level("WARNING", logger="oneformer"):
        out = model([{"image": _image(64, 64), "task": "semantic"}])[0]  # PANOPTIC_ON/INSTANCE_ON are True
        model([{"image": _image(64, 64), "task": "semantic"}])
    assert set(out) == {"sem_seg"}
    said = [r.getMessage() for r in caplog.records if "no thing classes" in r.getMessage()]
    assert len(said) == 1 and "a semantic-only dataset" in said[0]
    with torch.no_grad(), pytest.raises(RuntimeError, match=f"dataset '{name}' .* has no thing classes .* it is a "
                                                            "semantic-only dataset"):
        model([{"image": _image(64, 64), "task": "panoptic", "outputs": ["panoptic_seg"]}])
