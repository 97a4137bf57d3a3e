"""Export of OneFormer to ONNX and TorchScript, and a runtime for the exported files (README "Export").

- :mod:`.graph`: ``OneFormerExportModule`` (the traced graph) and its tensor-only semantic/panoptic post-processing.
- :mod:`.exporter`: ``export_onnx`` / ``export_torchscript`` / ``export_model`` (used by tools/export_model.py).
- :mod:`.runtime`: ``ExportedOneFormer``, which runs a file with onnxruntime or TorchScript and returns the eager
  model's Detectron2-format outputs.
"""
from .exporter import DEFAULT_OPSET, FORMATS, build_metadata, export_model, export_onnx, export_torchscript  # noqa
from .graph import POSTPROCESS, TASK_MODES, OneFormerExportModule, output_names  # noqa: F401
from .runtime import ExportedOneFormer, read_metadata  # noqa: F401

__all__ = ["DEFAULT_OPSET", "FORMATS", "POSTPROCESS", "TASK_MODES", "OneFormerExportModule", "output_names",
           "build_metadata", "export_model", "export_onnx", "export_torchscript", "ExportedOneFormer",
           "read_metadata"]
