"""Export a OneFormer model (used by tools/export_model.py).

Formats:

- ``pt2``: a ``torch.export`` ExportedProgram (``torch.export.save``), ``aoti``: an AOTInductor package
  (``torch._inductor.aoti_compile_and_package``) compiled from it, ``onnx``: the dynamo-based ONNX exporter
  (``torch.onnx.export(..., dynamo=True)``, opset 18) on it, with the deformable-attention operator translated to
  standard ONNX ops (:mod:`.onnx_ops`). All three take the graph of
  :class:`~oneformer.export.graph.PaddedOneFormerExportModule` (images padded by the caller to multiples of 32, with
  their sizes as an input; height and width symbolic as ``32 * h``) and return the logits.
- ``torchscript`` and ``onnx-torchscript`` (kept, not the default): one ``torch.jit.trace`` of
  :class:`~oneformer.export.graph.OneFormerExportModule` (any input size, optional in-graph post-processing), saved
  as TorchScript or written by the TorchScript-based ONNX exporter (``dynamo=False``).

For the traced formats The model code takes its export-friendly branches while tracing
(``torch.jit.is_tracing()``): sizes stay traced values, the deformable attention runs its ``grid_sample`` reference
on level sizes read from the feature maps in the graph, Swin pads and builds its shifted-window mask with tensor ops.

Each file carries a JSON description (ONNX ``metadata_props["oneformer"]``, TorchScript extra file
``oneformer.json``) that :mod:`oneformer.export.runtime` reads: inputs, outputs, task mode and token ids, input size
(static) or dynamic axes, and the MODEL.TEST settings and dataset metadata the eager post-processing needs.
"""
import contextlib
import json
import logging
import os
import warnings
import zipfile
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..oneformer_model import TASKS, task_string
from .graph import POSTPROCESS, TASK_MODES, OneFormerExportModule, PaddedOneFormerExportModule, output_names

__all__ = ["FORMATS", "EXPORT_FORMATS", "METADATA_KEY", "DEFAULT_OPSET", "export_model", "export_program",
           "export_pt2", "export_aoti", "export_onnx", "export_onnx_torchscript", "export_torchscript",
           "build_metadata", "format_from_path", "plan_export_size", "resized_size", "probe_canvases"]

logger = logging.getLogger(__name__)

FORMATS = ("pt2", "aoti", "onnx", "onnx-torchscript", "torchscript")
EXPORT_FORMATS = ("pt2", "aoti", "onnx")  # the torch.export-based ones
METADATA_KEY = "oneformer"  # ONNX metadata_props key; TorchScript extra file METADATA_KEY + ".json"
DEFAULT_OPSET = 17  # onnx-torchscript: GridSample needs 16, LayerNormalization 17
BLOCK = 32  # torch.export-based formats: padded height and width are 32 * h, 32 * w
FORMAT_VERSION = 1
MAX_BLOCKS = 1024  # dynamic exports without a test resize: padded sides up to 32 * 1024 pixels
PROBE_BLOCKS = 128  # canvases probed after a dynamic export: up to 4096 pixels a side
# the example image of a dynamic export is what the test resize makes of a 4:3 landscape photo: a graph is
# specialized to its example's window layout, so the example must look like what the runtime feeds
PHOTO_SIZE = (480, 640)


def resized_size(height: int, width: int, resize: Tuple[int, int]) -> Tuple[int, int]:
    """(h, w) of a height x width image after the test resize ``resize`` = (INPUT.MIN_SIZE_TEST, MAX_SIZE_TEST), as
    Detectron2's ResizeShortestEdge computes it (the predictor's and the runtime's resize)."""
    from detectron2.data.transforms import ResizeShortestEdge

    return tuple(ResizeShortestEdge.get_output_shape(int(height), int(width), int(resize[0]), int(resize[1])))


def _blocks(n: int) -> int:
    return -(-int(n) // BLOCK)


def plan_export_size(resize: Optional[Tuple[int, int]], dynamic: bool, height: Optional[int],
                     width: Optional[int]) -> Tuple[int, int, int, List[str]]:
    """The example (dynamic) or canvas (static) size of an export that serves what the runtime feeds it: images
    after the config's test resize ``resize`` = (INPUT.MIN_SIZE_TEST, MAX_SIZE_TEST) (None: no resize, sizes as
    given, default 256 x 256).

    Dynamic: the example defaults to a 4:3 photo after the test resize; a given ``height`` x ``width`` is taken as
    an image of that size and resized the same way (a graph specializes to its example's window layout, so an
    example the runtime never feeds makes a file that refuses every photo). Static: the canvas must hold a 4:3 photo
    after the test resize (else ValueError: every photo would be refused), and is cut to the largest size the
    resize produces. Returns (height, width, the largest padded side the runtime feeds in blocks of 32 pixels (the
    canvases :func:`probe_canvases` maps), notes: one line per correction).
    """
    if resize is None or int(resize[1]) <= 0:
        return (256 if height is None else int(height), 256 if width is None else int(width), MAX_BLOCKS, [])
    short, longest = int(resize[0]), int(resize[1])
    where = f"the config's test resize (INPUT.MIN_SIZE_TEST {short}, INPUT.MAX_SIZE_TEST {longest})"
    photo = resized_size(*PHOTO_SIZE, resize)
    notes = []
    if dynamic:
        if height is None or width is None:
            return photo[0], photo[1], _blocks(longest), notes
        h, w = resized_size(height, width, resize)
        if (h, w) != (int(height), int(width)):
            notes.append(f"example size {height}x{width} becomes {h}x{w} after {where}, which is what the runtime "
                         f"feeds: exporting at {h}x{w}")
        return h, w, _blocks(longest), notes
    if height is None or width is None:
        raise ValueError("a static export needs height and width (or use dynamic=True)")
    h, w = int(height), int(width)
    if photo[0] > _blocks(h) * BLOCK or photo[1] > _blocks(w) * BLOCK:
        raise ValueError(f"a static {h}x{w} canvas cannot hold the images {where} produces (a 640x480 photo "
                         f"becomes {photo[0]}x{photo[1]}; larger images are refused at run time): export with "
                         f"--dynamic, or give --height and --width of at least {photo[0]}x{photo[1]}")
    cap = _blocks(longest) * BLOCK
    if h > cap or w > cap:
        notes.append(f"a static {h}x{w} canvas is larger than any image {where} produces (at most {longest} pixels "
                     f"a side): exporting a {min(h, cap)}x{min(w, cap)} canvas")
        h, w = min(h, cap), min(w, cap)
    return h, w, _blocks(longest), notes


def probe_canvases(program, batch: int, max_blocks: int) -> List[str]:
    """Which padded sizes a dynamic ExportedProgram takes: row ``i`` is a string whose character ``j`` is "1" when
    a canvas of (32 (i + 1)) x (32 (j + 1)) pixels passes the program's shape guards, for 1..min(max_blocks, 128)
    blocks a side. torch.export specializes the graph to the example's layout (e.g. one Swin window or several in a
    stage), and the runtime uses this map to pad an image into a canvas the graph takes instead of failing."""
    module = program.module()
    guards = getattr(module, "_guards_fn", None)
    # the user inputs as the program records them: the image's height and width are symbols with a range; the
    # others (image sizes, task ids) have fixed shapes, taken from the program rather than restated here
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    image = inputs[0].meta["val"]
    bounds = []
    for d in (2, 3):
        r = program.range_constraints.get(image.shape[d].node.expr)
        bounds.append((int(r.lower), int(r.upper)) if r is not None else (BLOCK, BLOCK * MAX_BLOCKS))
    others = [torch.zeros(tuple(n.meta["val"].shape), dtype=n.meta["val"].dtype) for n in inputs[1:]]
    n = min(int(max_blocks), PROBE_BLOCKS)
    pixel = torch.zeros((1, 1, 1, 1), dtype=torch.uint8)

    def takes(hb: int, wb: int) -> bool:
        hp, wp = hb * BLOCK, wb * BLOCK
        if not (bounds[0][0] <= hp <= bounds[0][1] and bounds[1][0] <= wp <= bounds[1][1]):
            return False
        if guards is None:
            return True
        try:  # the guards read shapes only: an expanded one-pixel tensor costs nothing
            guards(pixel.expand(batch, 3, hp, wp), *others)
        except AssertionError:
            return False
        return True

    return ["".join("1" if takes(hb, wb) else "0" for wb in range(1, n + 1)) for hb in range(1, n + 1)]


def _dataset_info(model) -> Dict:
    meta = model.metadata
    mapping = getattr(meta, "thing_dataset_id_to_contiguous_id", None)
    return {
        "dataset": getattr(meta, "name", None),
        "thing_ids": None if mapping is None else [int(v) for v in mapping.values()],
        "thing_dataset_ids": None if mapping is None else [int(k) for k in mapping.keys()],
    }


def build_metadata(model, *, task: str, postprocess: str, fmt: str, dynamic: bool, height: int, width: int,
                   batch: int, opset: Optional[int] = None, input_format: str = "RGB",
                   resize: Optional[Tuple[int, int]] = None) -> Dict:
    """The JSON description stored in an exported file (see the module docstring). ``resize``: the config's
    (INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST), which the runtime applies as the predictor does (None: no resize)."""
    padded = fmt in EXPORT_FORMATS
    info = _dataset_info(model)
    ids = {t: model.task_token_ids(t).tolist() for t in TASKS}
    meta = {
        "format_version": FORMAT_VERSION,
        "format": fmt,
        "opset": opset,
        "task": task,
        "default_task": task_string(model.default_task)[len("The task is "):],  # MODEL.TEST.TASK
        "task_ids": ids,  # token ids of "The task is <task>" for every task (the input of a task "input" graph)
        "task_seq_len": len(ids["panoptic"]),
        "postprocess": postprocess,
        "inputs": ["image"] + (["image_sizes"] if padded else []) + (["task_ids"] if task == "input" else []),
        # torch.export-based formats: images padded by the caller to multiples of "block", sizes as an input
        "padded_input": padded,
        "block": BLOCK if padded else None,
        "resize": None if resize is None else [int(resize[0]), int(resize[1])],
        "outputs": list(output_names(postprocess)),
        "dynamic": bool(dynamic),
        "height": None if dynamic else int(height),
        "width": None if dynamic else int(width),
        "batch": None if dynamic else int(batch),
        "input_format": input_format,  # channel order of the image input (cfg.INPUT.FORMAT)
        "size_divisibility": int(model.size_divisibility),
        "num_classes": int(model.sem_seg_head.num_classes),
        "num_queries": int(model.num_queries),
        "semantic_on": bool(model.semantic_on),
        "panoptic_on": bool(model.panoptic_on),
        "instance_on": bool(model.instance_on),
        "detection_on": bool(model.detection_on),
        "is_demo": bool(model.is_demo),
        "sem_seg_postprocess_before_inference": bool(model.sem_seg_postprocess_before_inference),
        "object_mask_threshold": float(model.object_mask_threshold),
        "overlap_threshold": float(model.overlap_threshold),
        "panoptic_rule": model.panoptic_rule,
        "test_topk_per_image": int(model.test_topk_per_image),
    }
    meta.update(info)
    return meta


@contextlib.contextmanager
def _quiet_export():
    """Silence the warnings every export of this model raises and that say nothing about it: the deprecation notes
    of torch.jit.trace and of the TorchScript-based ONNX exporter, and two TracerWarnings on static checks (GroupNorm's
    training-mode size check, MSDeformAttn's reference-point kind). Other TracerWarnings stay visible."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*feature will be removed", category=DeprecationWarning)
        # a FutureWarning in torch 2.14, a DeprecationWarning in 2.11
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.(trace|trace_method|save|load)` is deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch\.nn\.functional")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"oneformer\.ops\.modules")
        yield


def _example_inputs(wrapper: OneFormerExportModule, batch: int, height: int, width: int):
    g = torch.Generator().manual_seed(0)
    device = wrapper.model.device
    image = torch.randint(0, 256, (batch, 3, height, width), generator=g, dtype=torch.uint8).to(device)
    if wrapper.task != "input":
        return (image,)
    ids = wrapper.model.task_token_ids("panoptic").view(1, -1).expand(batch, -1).contiguous().to(device)
    return (image, ids)


def _check_args(task: str, postprocess: str, dynamic: bool, height: Optional[int], width: Optional[int],
                batch: int) -> None:
    if task not in TASK_MODES:
        raise ValueError(f"task must be one of {TASK_MODES}, got {task!r}")
    if postprocess not in POSTPROCESS:
        raise ValueError(f"postprocess must be one of {POSTPROCESS}, got {postprocess!r}")
    if not dynamic and (height is None or width is None):
        raise ValueError("a static export needs height and width (or use dynamic=True)")
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _prepare(model, task, postprocess, dynamic, height, width, batch, resize=None):
    _check_args(task, postprocess, dynamic, height, width, batch)
    if task != "input":
        task_string(task)
    height, width, _ = _planned_size(resize, dynamic, height, width)
    info = _dataset_info(model)
    wrapper = OneFormerExportModule(model, task=task, postprocess=postprocess, thing_ids=info["thing_ids"]
                                    if postprocess == "panoptic" else None)
    return wrapper, height, width


def _trace(wrapper, inputs):
    with torch.no_grad():
        return torch.jit.trace(wrapper, inputs, check_trace=False)


def export_torchscript(model, path: str, *, task: str = "panoptic", postprocess: str = "none",
                       height: Optional[int] = None, width: Optional[int] = None, dynamic: bool = False,
                       batch: int = 1, input_format: str = "RGB", resize: Optional[Tuple[int, int]] = None) -> Dict:
    """Trace ``model`` (an OneFormer) into a TorchScript file; returns the stored metadata.

    ``height``/``width``: the input size (static) or the example size of the trace (dynamic; default 256). A trace of
    this model follows the input size either way; ``dynamic=False`` only records the size as the file's contract.
    """
    wrapper, height, width = _prepare(model, task, postprocess, dynamic, height, width, batch, resize)
    meta = build_metadata(model, task=task, postprocess=postprocess, fmt="torchscript", dynamic=dynamic,
                          height=height, width=width, batch=batch, input_format=input_format, resize=resize)
    with _eval_mode(model), _quiet_export():
        wrapper.eval()
        traced = _trace(wrapper, _example_inputs(wrapper, batch, height, width))
        torch.jit.save(traced, path, _extra_files={METADATA_KEY + ".json": json.dumps(meta)})
    return meta


def export_onnx_torchscript(model, path: str, *, task: str = "panoptic", postprocess: str = "none",
                            height: Optional[int] = None, width: Optional[int] = None, dynamic: bool = False,
                            batch: int = 1, opset: Optional[int] = DEFAULT_OPSET, input_format: str = "RGB",
                            resize: Optional[Tuple[int, int]] = None) -> Dict:
    """Export ``model`` (an OneFormer) to an ONNX file with the TorchScript-based exporter; returns the metadata.

    ``dynamic=True`` makes batch, height and width dynamic axes (``height``/``width`` are then only the example size,
    default 256); otherwise the graph is for (batch, 3, height, width) inputs.
    """
    if opset is None:
        opset = DEFAULT_OPSET
    if opset < 17:
        raise ValueError(f"opset must be at least 17 (GridSample, LayerNormalization), got {opset}")
    import onnx  # noqa: F401  (needed by the exporter; fail early with a clear error)

    wrapper, height, width = _prepare(model, task, postprocess, dynamic, height, width, batch, resize)
    meta = build_metadata(model, task=task, postprocess=postprocess, fmt="onnx-torchscript", dynamic=dynamic,
                          height=height, width=width, batch=batch, opset=opset, input_format=input_format,
                          resize=resize)
    names = list(output_names(postprocess))
    dynamic_axes = None
    if dynamic:
        spatial = {0: "batch", 2: "height", 3: "width"}
        dynamic_axes = {"image": spatial, "task_ids": {0: "batch"}, "pred_logits": {0: "batch"},
                        "pred_masks": {0: "batch", 2: "mask_height", 3: "mask_width"},
                        "sem_seg": spatial, "sem_seg_classes": {0: "batch", 1: "height", 2: "width"},
                        "panoptic_seg": {0: "batch", 1: "height", 2: "width"}, "segments_category": {0: "batch"},
                        "segments_isthing": {0: "batch"}, "num_segments": {0: "batch"}}
        dynamic_axes = {k: v for k, v in dynamic_axes.items() if k in names or k in wrapper.input_names}
    with _eval_mode(model), _quiet_export():
        wrapper.eval()
        inputs = _example_inputs(wrapper, batch, height, width)
        with torch.no_grad():
            torch.onnx.export(wrapper, inputs, path, dynamo=False, opset_version=opset,
                              input_names=wrapper.input_names, output_names=names, dynamic_axes=dynamic_axes,
                              do_constant_folding=True)
    _write_onnx_metadata(path, meta)
    return meta


def _write_onnx_metadata(path: str, meta: Dict) -> None:
    import onnx

    proto = onnx.load(path, load_external_data=False)
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(meta)
    onnx.save(proto, path)


def format_from_path(path: str) -> str:
    """The format a file name implies: .onnx -> "onnx", .pt2 -> "pt2"; anything else needs an explicit format."""
    path = os.fspath(path)
    if path.endswith(".onnx"):
        return "onnx"
    if path.endswith(".pt2"):
        return "pt2"
    raise ValueError(f"cannot tell the export format from {path!r}: name it .onnx or .pt2, or choose one of "
                     f"{FORMATS} (--format)")


def export_model(model, path: str, fmt: Optional[str] = None, **kwargs) -> Dict:
    """Export to ``fmt`` (one of FORMATS; default from the file name, see :func:`format_from_path`)."""
    if fmt is None:
        fmt = format_from_path(path)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt in EXPORT_FORMATS and kwargs.pop("postprocess", "none") != "none":
        raise ValueError(f"format {fmt!r} exports the logits (postprocess 'none'; the runtime post-processes them); "
                         "in-graph post-processing is available with 'torchscript' and 'onnx-torchscript'")
    if fmt not in ("onnx", "onnx-torchscript"):
        kwargs.pop("opset", None)
    return {"pt2": export_pt2, "aoti": export_aoti, "onnx": export_onnx, "onnx-torchscript": export_onnx_torchscript,
            "torchscript": export_torchscript}[fmt](model, path, **kwargs)


# ------------------------------------------------------------------------------------------------------------------
# torch.export-based formats


def _padded_example(wrapper: PaddedOneFormerExportModule, batch: int, height: int, width: int):
    """Example inputs of the padded graph: a (batch, 3, Hp, Wp) uint8 image, its sizes, task ids if an input."""
    image = _example_inputs(wrapper, batch, height, width)[0]
    hp, wp = -(-height // BLOCK) * BLOCK, -(-width // BLOCK) * BLOCK
    padded = image.new_zeros((batch, 3, hp, wp))
    padded[:, :, :height, :width] = image
    sizes = torch.tensor([[height, width]] * batch, dtype=torch.int64, device=image.device)
    ids = None
    if wrapper.task == "input":
        ids = wrapper.model.task_token_ids("panoptic").view(1, -1).expand(batch, -1).contiguous().to(image.device)
    return (padded, sizes) + ((ids,) if ids is not None else ())


def export_program(model, *, task: str = "panoptic", height: Optional[int] = None, width: Optional[int] = None,
                   dynamic: bool = False, batch: int = 1, strict: bool = False):
    """``torch.export.export`` of :class:`PaddedOneFormerExportModule` -> ExportedProgram.

    ``dynamic``: the padded height (32 * h) and width (32 * w) are symbolic, h and w in [2, 1024] (a range cut to
    the test resize's largest size would be tighter, but makes torch 2.11's AOTInductor and ONNX lowering fail);
    ``height``/``width`` are then only the example size (default 256; :func:`plan_export_size` derives it from the
    test resize). The graph is specialized to the example's layout (:func:`probe_canvases` tells which sizes it
    takes). The batch is ``batch`` either way (a symbolic batch would need guards that the model's code does not
    satisfy for a batch of 1).
    """
    _check_args(task, "none", dynamic, height, width, batch)
    if task != "input":
        task_string(task)
    height = 256 if height is None else int(height)
    width = 256 if width is None else int(width)
    wrapper = PaddedOneFormerExportModule(model, task=task).eval()
    inputs = _padded_example(wrapper, batch, height, width)
    dynamic_shapes = None
    if dynamic:
        from torch.export import Dim

        h, w = Dim("h", min=2, max=MAX_BLOCKS), Dim("w", min=2, max=MAX_BLOCKS)
        dynamic_shapes = [{2: BLOCK * h, 3: BLOCK * w}, None] + ([None] if task == "input" else [])
    with _eval_mode(model), torch.no_grad():
        return torch.export.export(wrapper, inputs, dynamic_shapes=dynamic_shapes, strict=strict)


def _planned_size(resize, dynamic, height, width):
    """plan_export_size with its corrections logged (one line each)."""
    height, width, max_blocks, notes = plan_export_size(resize, dynamic, height, width)
    for note in notes:
        logger.warning(note)
    return height, width, max_blocks


def _program_and_meta(model, fmt, program, *, task, height, width, dynamic, batch, input_format, resize, opset=None):
    """The ExportedProgram (exported here unless given) and its description, with, for a dynamic program, the map
    of the canvases it takes (:func:`probe_canvases`)."""
    _check_args(task, "none", dynamic, height, width, batch)
    if program is None:
        height, width, max_blocks = _planned_size(resize, dynamic, height, width)
        program = export_program(model, task=task, height=height, width=width, dynamic=dynamic, batch=batch)
    else:  # made by the caller with these arguments
        height, width = height or 256, width or 256
        max_blocks = plan_export_size(resize, dynamic, height, width)[2]
    meta = build_metadata(model, task=task, postprocess="none", fmt=fmt, dynamic=dynamic, height=height,
                          width=width, batch=batch, opset=opset, input_format=input_format, resize=resize)
    meta["batch"] = int(batch)  # fixed, also with dynamic sizes
    meta["example"] = [int(height), int(width)]
    if dynamic:
        meta["canvases"] = probe_canvases(program, int(batch), max_blocks)
        if not any("1" in row for row in meta["canvases"]):
            raise RuntimeError(f"the exported program takes none of the canvases up to {len(meta['canvases'])} "
                               f"blocks of {BLOCK} pixels a side")
    else:  # the padded size is the graph's contract
        meta["height"], meta["width"] = _blocks(height) * BLOCK, _blocks(width) * BLOCK
    return program, meta


def export_pt2(model, path: str, *, task: str = "panoptic", height: Optional[int] = None,
               width: Optional[int] = None, dynamic: bool = False, batch: int = 1, input_format: str = "RGB",
               resize: Optional[Tuple[int, int]] = None, program=None) -> Dict:
    """Write the ExportedProgram (``torch.export.save``, metadata as the extra file ``oneformer.json``); returns the
    metadata. ``program``: an ExportedProgram of :func:`export_program` (made with the same task, sizes, dynamic and
    batch arguments, which the metadata describes) to save instead of exporting again."""
    program, meta = _program_and_meta(model, "pt2", program, task=task, height=height, width=width, dynamic=dynamic,
                                      batch=batch, input_format=input_format, resize=resize)
    torch.export.save(program, path, extra_files={METADATA_KEY + ".json": json.dumps(meta)})
    return meta


def export_aoti(model, path: str, *, task: str = "panoptic", height: Optional[int] = None,
                width: Optional[int] = None, dynamic: bool = False, batch: int = 1, input_format: str = "RGB",
                resize: Optional[Tuple[int, int]] = None, program=None) -> Dict:
    """Compile the ExportedProgram with AOTInductor into a package (``torch._inductor.aoti_compile_and_package``),
    loaded by ``torch._inductor.aoti_load_package``; the metadata is added to the archive as ``oneformer.json``.
    The package calls the ``oneformer::ms_deform_attn`` operator, so the loading process must have it registered
    (``import oneformer``)."""
    program, meta = _program_and_meta(model, "aoti", program, task=task, height=height, width=width, dynamic=dynamic,
                                      batch=batch, input_format=input_format, resize=resize)
    from torch._inductor import aoti_compile_and_package

    aoti_compile_and_package(program, package_path=path)
    with zipfile.ZipFile(path, "a") as archive:
        # inside the archive's top folder, where the loader expects every entry
        top = archive.namelist()[0].split("/")[0]
        archive.writestr(f"{top}/extra/{METADATA_KEY}.json", json.dumps(meta))
    return meta


@contextlib.contextmanager
def _optimizer_logs_at_warning():
    """The ONNX optimizer's loggers (onnx_ir's passes, onnxscript's rewriter and constant folding) at WARNING: at INFO
    (tools/export_model.py's level) they write ~1000 lines per export of this model (one per deduplicated
    initializer, ...); their warnings stay visible."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(model, path: str, *, task: str = "panoptic", height: Optional[int] = None,
                width: Optional[int] = None, dynamic: bool = False, batch: int = 1, input_format: str = "RGB",
                resize: Optional[Tuple[int, int]] = None, program=None, opset: Optional[int] = None) -> Dict:
    """Convert the ExportedProgram with the dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``) at opset
    18, the deformable attention as GridSample per level (:mod:`.onnx_ops`); returns the metadata."""
    from .onnx_ops import CUSTOM_TRANSLATION_TABLE, ONNX_OPSET

    if opset not in (None, ONNX_OPSET):
        raise ValueError(f"the dynamo-based ONNX export writes opset {ONNX_OPSET}, got opset {opset} (the "
                         "'onnx-torchscript' format takes other opsets)")
    program, meta = _program_and_meta(model, "onnx", program, task=task, height=height, width=width,
                                      dynamic=dynamic, batch=batch, input_format=input_format, resize=resize,
                                      opset=ONNX_OPSET)
    wrapper_inputs = ["image", "image_sizes"] + (["task_ids"] if task == "input" else [])
    with warnings.catch_warnings(), _optimizer_logs_at_warning():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        onnx_program = torch.onnx.export(program, dynamo=True, opset_version=ONNX_OPSET, optimize=True,
                                         input_names=wrapper_inputs, output_names=["pred_logits", "pred_masks"],
                                         custom_translation_table=CUSTOM_TRANSLATION_TABLE, verbose=False)
        onnx_program.save(path)
    _write_onnx_metadata(path, meta)
    return meta
