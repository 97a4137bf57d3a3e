"""tools/benchmark_train_memory.py on the synthetic config (64x64, batch 1): one process per variant, a table with
the peak memory of one training iteration, the JSON results; the RSS limit stops a variant and says so."""
import json

from tests.tiny import load_script

bench = load_script("benchmark_train_memory", "tools")


def test_table_and_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert bench.main(["--config-file", "configs/synthetic/oneformer_synthetic.yaml", "--size", "64", "--threads",
                       "1", "--variants", "none,all", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5.0M parameters, batch 1, 64x64, cpu, float32, one iteration" in text
    assert "| none |" in text and "| backbone + pixel-decoder encoder |" in text
    results = json.loads(out.read_text())
    assert [r["variant"] for r in results] == ["none", "all"]
    for r in results:
        assert r["peak_bytes"] > r["iteration_bytes"] > 0 and r["seconds"] > 0 and r["measure"] == "peak RSS"


def test_memory_limit_stops_a_variant(capsys):
    assert bench.main(["--config-file", "configs/synthetic/oneformer_synthetic.yaml", "--size", "64", "--threads",
                       "1", "--variants", "none", "--max-memory-gb", "0.05"]) == 1
    assert "stopped: RSS passed --max-memory-gb 0.05" in capsys.readouterr().out


def test_batch_has_the_panoptic_targets():
    args = bench.parse_args(["--config-file", "configs/synthetic/oneformer_synthetic.yaml"])
    cfg = bench.build_cfg(args, "backbone")
    assert cfg.MODEL.BACKBONE.ACTIVATION_CHECKPOINT and not cfg.MODEL.SEM_SEG_HEAD.ENCODER_ACTIVATION_CHECKPOINT
    batch = bench.make_batch(cfg, 2, (32, 48))
    assert len(batch) == 2 and tuple(batch[0]["image"].shape) == (3, 32, 48)
    inst = batch[0]["instances"]
    assert 0 < len(inst) <= 16 and inst.gt_masks.shape[1:] == (32, 48)
    assert len(batch[0]["text"]) == cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES - cfg.MODEL.TEXT_ENCODER.N_CTX
