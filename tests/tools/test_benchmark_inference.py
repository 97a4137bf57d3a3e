"""tools/benchmark_inference.py: a short run on the bundled synthetic checkpoint times ours (with each panoptic rule)
and transformers' model and compares their outputs."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("transformers")


# imported by its module name: the benchmark's worker processes (spawned) unpickle its functions by that name
sys.path.insert(0, str(REPO / "tools"))
import benchmark_inference as bench  # noqa: E402


def test_short_run_on_the_synthetic_checkpoint(capsys):
    ckpt = REPO / "demo" / "assets" / "oneformer_synthetic.pth"
    if not ckpt.exists():
        pytest.skip("bundled checkpoint missing")
    results = bench.main([
        "--config-file", str(REPO / "configs" / "synthetic" / "oneformer_synthetic.yaml"), "--weights", str(ckpt),
        "--image", str(REPO / "demo" / "assets" / "samples" / "sample_0.png"), "--runs", "2", "--warmup", "1",
    ])
    assert set(results) == {"ours, original rule", "ours, transformers rule", "transformers"}
    for r in results.values():
        assert len(r["times"]) == 2 and r["latency"] > 0
    stages = {"backbone", "pixel decoder", "transformer decoder", "post-processing"}
    assert set(results["ours, original rule"]["stages"]) == stages
    hf = results["transformers"]["panoptic"]
    # same weights and rule: the same segmentation up to float32 noise
    cat, seg = bench.panoptic_agreement(results["ours, transformers rule"]["panoptic"], hf)
    assert seg > 0.999
    # the original's rule differs only where transformers' rule does (borders, low-probability pixels)
    cat, seg = bench.panoptic_agreement(results["ours, original rule"]["panoptic"], hf)
    assert 0.95 < seg <= 1.0
    printed = capsys.readouterr().out
    assert "speed-up (transformers / ours, original rule)" in printed
    assert "ours, transformers rule per stage" in printed
