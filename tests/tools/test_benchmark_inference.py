"""tools/benchmark_inference.py: its re-implementation of transformers' panoptic rules equals transformers' own
post-processing, and a short run on the bundled synthetic checkpoint times both models and compares their outputs."""
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("transformers")


# imported by its module name: the benchmark's worker processes (spawned) unpickle its functions by that name
sys.path.insert(0, str(REPO / "tools"))
import benchmark_inference as bench  # noqa: E402


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transformers_rules_equal_transformers_post_processing(seed):
    from transformers import OneFormerImageProcessor
    from transformers.models.oneformer.modeling_oneformer import OneFormerForUniversalSegmentationOutput

    g = torch.Generator().manual_seed(seed)
    mask_cls = torch.randn(12, 6, generator=g) * 8  # 12 queries, 5 classes + no-object
    # blobs: query q is confident inside a disc around a random centre, plus noise
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(10.0), indexing="ij")
    centre = torch.rand(12, 2, generator=g) * torch.tensor([8.0, 10.0])
    radius = 1.5 + 2 * torch.rand(12, 1, 1, generator=g)
    dist = ((yy - centre[:, :1, None]) ** 2 + (xx - centre[:, 1:, None]) ** 2).sqrt()
    mask_pred = 3 * (radius - dist) + torch.randn(12, 8, 10, generator=g)
    fuse = {0, 1, 2}
    out = OneFormerForUniversalSegmentationOutput(class_queries_logits=mask_cls[None],
                                                  masks_queries_logits=mask_pred[None])
    ref = OneFormerImageProcessor().post_process_panoptic_segmentation(
        out, threshold=0.3, overlap_mask_area_threshold=0.6, label_ids_to_fuse=fuse, target_sizes=[(32, 40)])[0]
    seg, classes = bench.transformers_rules_panoptic(mask_cls, mask_pred, (32, 40), 0.3, 0.6, fuse)
    assert torch.equal(seg, ref["segmentation"].to(torch.int32))
    assert classes == {s["id"]: s["label_id"] for s in ref["segments_info"]}
    assert len(classes) > 1  # the case is not trivial


def test_short_run_on_the_synthetic_checkpoint(capsys):
    ckpt = REPO / "demo" / "assets" / "oneformer_synthetic.pth"
    if not ckpt.exists():
        pytest.skip("bundled checkpoint missing")
    ours, hf = bench.main([
        "--config-file", str(REPO / "configs" / "synthetic" / "oneformer_synthetic.yaml"), "--weights", str(ckpt),
        "--image", str(REPO / "demo" / "assets" / "samples" / "sample_0.png"), "--runs", "2", "--warmup", "1",
    ])
    assert len(ours["times"]) == len(hf["times"]) == 2 and ours["latency"] > 0 and hf["latency"] > 0
    assert set(ours["stages"]) == {"backbone", "pixel decoder", "transformer decoder", "post-processing"}
    # same logits: transformers' rules on ours reproduce transformers' segmentation
    cat, seg = bench.panoptic_agreement(ours["panoptic_transformers_rules"], hf["panoptic"])
    assert seg > 0.999
    # the original's rule (ours) differs only where transformers' rule does (borders, low-probability pixels)
    cat, seg = bench.panoptic_agreement(ours["panoptic"], hf["panoptic"])
    assert 0.95 < seg <= 1.0
    printed = capsys.readouterr().out
    assert "speed-up (transformers / ours)" in printed and "ours per stage" in printed
