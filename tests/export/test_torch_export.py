"""The torch.export-based formats (pt2, aoti, onnx via the dynamo exporter) on the tiny config.

One ``torch.export`` of the padded graph (dynamic size, the task as an input) is saved as an ExportedProgram,
compiled into an AOTInductor package and converted to ONNX; each file, run by ``ExportedOneFormer``, gives the eager
model's class and mask logits (1e-4) and Detectron2 outputs at two image sizes (one not a multiple of 32, padded by
the runtime), for every task; the padded graph gives a batch of images of different sizes each its own eager
outputs. The graph
calls the deformable-attention custom operator (ONNX: its translation to standard ops, no custom domain).
"""
import logging
import warnings

import pytest
import torch

from oneformer.export import ExportedOneFormer, PaddedOneFormerExportModule, export_model, export_program, read_metadata
from oneformer.export.exporter import export_aoti, export_onnx, export_pt2
from oneformer.ops import extension_status
from tests.export.test_export import TOL, _blobs, _check, _eager, model  # noqa: F401  (model: the fixture)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SIZES = [(64, 64), (72, 90)]
TASKS = ("semantic", "instance", "panoptic")


@pytest.fixture(scope="module")
def program(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_program(model, task="input", dynamic=True, height=64, width=96)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def files(model, program, tmp_path_factory):
    """format -> file, written from the one program on first use; ``files.logs[format]``: the log records of its
    writing, with the root logger at INFO as tools/export_model.py sets it."""
    folder = tmp_path_factory.mktemp("torch_export")
    writers = {"pt2": export_pt2, "onnx": export_onnx, "aoti": export_aoti}
    paths = {}

    def get(fmt):
        if fmt not in paths:
            path = str(folder / (f"model_{fmt}.onnx" if fmt == "onnx" else f"model_{fmt}.pt2"))
            root, handler = logging.getLogger(), _Records()
            level = root.level
            root.addHandler(handler)
            root.setLevel(logging.INFO)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    writers[fmt](model, path, task="input", dynamic=True, program=program)
            finally:
                root.removeHandler(handler)
                root.setLevel(level)
            paths[fmt] = path
            get.logs[fmt] = handler.records
        return paths[fmt]

    get.logs = {}
    return get


@pytest.mark.skipif(not extension_status()["built"], reason="needs the compiled oneformer.ops._C")
def test_graph_calls_the_custom_operator(program):
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "oneformer.ms_deform_attn.default" in targets
    assert not any("grid_sampler" in t for t in targets)  # not the reference


@pytest.mark.parametrize("fmt", ["pt2", "aoti", "onnx"])
def test_format_matches_eager(model, files, fmt):
    path = files(fmt)
    meta = read_metadata(path)
    assert meta["format"] == fmt and meta["padded_input"] and meta["dynamic"]
    assert meta["inputs"] == ["image", "image_sizes", "task_ids"]
    runtime = ExportedOneFormer(path, num_threads=1)
    for i, size in enumerate(SIZES):
        for task in TASKS if i == 0 else TASKS[1:]:
            _check(runtime, model, size, task)
    _check(runtime, model, SIZES[1], "panoptic", image_kind="array")
    with pytest.raises(ValueError, match="exported for batches of 1 images"):
        runtime.run(torch.stack([_blobs(*SIZES[0])] * 2), torch.stack([runtime.task_ids("panoptic")] * 2))


def test_onnx_export_does_not_flood_the_log(files):
    """The dynamo exporter's optimizer (onnx_ir, onnxscript) logs hundreds of INFO lines per export (~930 from
    tools/export_model.py, which logs at INFO): kept to its warnings."""
    files("onnx")
    noisy = [r for r in files.logs["onnx"] if r.name.split(".")[0] in ("onnx_ir", "onnxscript")
             and r.levelno < logging.WARNING]
    assert noisy == [], f"{len(noisy)} INFO records, e.g. {noisy[0].name}: {noisy[0].getMessage()}"


def test_onnx_file_uses_standard_ops_only(files):
    proto = onnx.load(files("onnx"))
    assert proto.opset_import[0].version == 18
    domains = {n.domain for n in proto.graph.node} | {f.domain for f in proto.functions}
    assert domains <= {"", "pkg.onnxscript.torch_lib", "pkg.onnxscript.torch_lib.common", "pkg.torch.onnx"}, domains
    ops = {n.op_type for n in proto.graph.node}
    assert "GridSample" in ops


def test_post_processing_in_graph_is_refused(model, tmp_path):
    with pytest.raises(ValueError, match="in-graph post-processing is available with 'torchscript'"):
        export_model(model, str(tmp_path / "m.pt2"), postprocess="panoptic")
    with pytest.raises(ValueError, match="cannot tell the export format"):
        export_model(model, str(tmp_path / "m.bin"))


def test_padded_graph_equals_the_model_in_eager_mode(model):
    """Two images of different sizes on one canvas (the padding's content does not matter) give each image's own
    eager logits."""
    wrapper = PaddedOneFormerExportModule(model, task="panoptic")
    images = [_blobs(64, 64), _blobs(72, 90)]
    canvas = torch.full((2, 3, 96, 96), 255, dtype=torch.uint8)
    canvas[0, :, :64, :64], canvas[1, :, :72, :90] = images
    with torch.no_grad():
        logits, masks = wrapper(canvas, torch.tensor([[64, 64], [72, 90]]))
        batched = [{"image": im, "task": "panoptic"} for im in images]
        ref = model.network(model.preprocess_image(batched).tensor, model.encode_tasks(batched))
    torch.testing.assert_close(logits, ref["pred_logits"], rtol=0, atol=TOL)
    torch.testing.assert_close(masks, ref["pred_masks"], rtol=0, atol=TOL)
    cls, ref_masks, _ = _eager(model, (72, 90), "panoptic")  # and the second one alone
    torch.testing.assert_close(logits[1:], cls, rtol=0, atol=TOL)
    torch.testing.assert_close(masks[1:], ref_masks, rtol=0, atol=TOL)


def test_cli_pt2_with_verify_and_errors(model, tmp_path, capsys):
    """tools/export_model.py --format pt2 (static 64x64): the config's test resize is recorded, --verify compares the
    file's logits with the eager model's; options a format does not take stop with one line."""
    import importlib.util
    import os

    from tests.export.test_export import _cfg
    from tests.tiny import REPO

    spec = importlib.util.spec_from_file_location("export_model", os.path.join(REPO, "tools", "export_model.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    cfg_path, weights = tmp_path / "tiny.yaml", tmp_path / "model.pth"
    cfg_path.write_text(_cfg().dump())
    torch.save({"model": model.state_dict()}, weights)
    common = ["--config-file", str(cfg_path), "--height", "64", "--width", "64"]
    small = ["INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "64"]  # a 64x64 canvas holds a resized photo
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = cli.main(common + ["--output", str(tmp_path / "m.pt2"), "--verify", "MODEL.WEIGHTS", str(weights),
                                  *small])
    assert meta["format"] == "pt2" and meta["resize"] == [48, 64]
    assert float(capsys.readouterr().out.strip().split()[-1]) <= TOL
    with pytest.raises(SystemExit, match="in-graph post-processing is available with 'torchscript'"):
        cli.main(common + ["--output", str(tmp_path / "n.pt2"), "--postprocess", "semantic",
                           "MODEL.WEIGHTS", str(weights)])
    with pytest.raises(SystemExit, match="cannot tell the export format from"):
        cli.main(common + ["--output", str(tmp_path / "n.bin"), "MODEL.WEIGHTS", str(weights)])
