"""Export a OneFormer model to ONNX or TorchScript (used by tools/export_model.py).

Both formats come from one ``torch.jit.trace`` of :class:`~oneformer.export.graph.OneFormerExportModule`: the
TorchScript file is that trace, the ONNX file is written by ``torch.onnx.export(..., dynamo=False)`` (the
TorchScript-based exporter) from the same trace. The model code takes its export-friendly branches while tracing
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
from typing import Dict, Optional

import torch
from torch import nn

from ..oneformer_model import TASKS, task_string
from .graph import POSTPROCESS, TASK_MODES, OneFormerExportModule, output_names

__all__ = ["FORMATS", "METADATA_KEY", "DEFAULT_OPSET", "export_model", "export_onnx", "export_torchscript",
           "build_metadata"]

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
METADATA_KEY = "oneformer"  # ONNX metadata_props key; TorchScript extra file METADATA_KEY + ".json"
DEFAULT_OPSET = 17  # GridSample needs 16, LayerNormalization 17
FORMAT_VERSION = 1


def _dataset_info(model) -> Dict:
    meta = model.metadata
    mapping = getattr(meta, "thing_dataset_id_to_contiguous_id", None)
    return {
        "dataset": getattr(meta, "name", None),
        "thing_ids": None if mapping is None else [int(v) for v in mapping.values()],
        "thing_dataset_ids": None if mapping is None else [int(k) for k in mapping.keys()],
    }


def build_metadata(model, *, task: str, postprocess: str, fmt: str, dynamic: bool, height: int, width: int,
                   batch: int, opset: Optional[int] = None, input_format: str = "RGB") -> Dict:
    """The JSON description stored in an exported file (see the module docstring)."""
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
        "inputs": ["image"] + (["task_ids"] if task == "input" else []),
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
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.(trace|trace_method|save|load)` is deprecated",
                                category=FutureWarning)
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


def _prepare(model, task, postprocess, dynamic, height, width, batch):
    _check_args(task, postprocess, dynamic, height, width, batch)
    if task != "input":
        task_string(task)
    height = 256 if height is None else int(height)
    width = 256 if width is None else int(width)
    info = _dataset_info(model)
    wrapper = OneFormerExportModule(model, task=task, postprocess=postprocess, thing_ids=info["thing_ids"]
                                    if postprocess == "panoptic" else None)
    return wrapper, height, width


def _trace(wrapper, inputs):
    with torch.no_grad():
        return torch.jit.trace(wrapper, inputs, check_trace=False)


def export_torchscript(model, path: str, *, task: str = "panoptic", postprocess: str = "none",
                       height: Optional[int] = None, width: Optional[int] = None, dynamic: bool = False,
                       batch: int = 1, input_format: str = "RGB") -> Dict:
    """Trace ``model`` (an OneFormer) into a TorchScript file; returns the stored metadata.

    ``height``/``width``: the input size (static) or the example size of the trace (dynamic; default 256). A trace of
    this model follows the input size either way; ``dynamic=False`` only records the size as the file's contract.
    """
    wrapper, height, width = _prepare(model, task, postprocess, dynamic, height, width, batch)
    meta = build_metadata(model, task=task, postprocess=postprocess, fmt="torchscript", dynamic=dynamic,
                          height=height, width=width, batch=batch, input_format=input_format)
    with _eval_mode(model), _quiet_export():
        wrapper.eval()
        traced = _trace(wrapper, _example_inputs(wrapper, batch, height, width))
        torch.jit.save(traced, path, _extra_files={METADATA_KEY + ".json": json.dumps(meta)})
    return meta


def export_onnx(model, path: str, *, task: str = "panoptic", postprocess: str = "none",
                height: Optional[int] = None, width: Optional[int] = None, dynamic: bool = False, batch: int = 1,
                opset: int = DEFAULT_OPSET, input_format: str = "RGB") -> Dict:
    """Export ``model`` (an OneFormer) to an ONNX file with the TorchScript-based exporter; returns the metadata.

    ``dynamic=True`` makes batch, height and width dynamic axes (``height``/``width`` are then only the example size,
    default 256); otherwise the graph is for (batch, 3, height, width) inputs.
    """
    if opset < 17:
        raise ValueError(f"opset must be at least 17 (GridSample, LayerNormalization), got {opset}")
    import onnx  # noqa: F401  (needed by the exporter; fail early with a clear error)

    wrapper, height, width = _prepare(model, task, postprocess, dynamic, height, width, batch)
    meta = build_metadata(model, task=task, postprocess=postprocess, fmt="onnx", dynamic=dynamic, height=height,
                          width=width, batch=batch, opset=opset, input_format=input_format)
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


def export_model(model, path: str, fmt: Optional[str] = None, **kwargs) -> Dict:
    """Export to ``fmt`` ("onnx" or "torchscript"; default from the file name: .onnx, else TorchScript)."""
    if fmt is None:
        fmt = "onnx" if os.fspath(path).endswith(".onnx") else "torchscript"
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return (export_onnx if fmt == "onnx" else export_torchscript)(model, path, **kwargs)

