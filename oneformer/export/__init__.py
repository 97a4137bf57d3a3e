"""Export of OneFormer (torch.export, AOTInductor, ONNX, TorchScript) and a runtime for the files (README "Export").

- :mod:`.graph`: ``PaddedOneFormerExportModule`` (the torch.export graph), ``OneFormerExportModule`` (the traced
  TorchScript graph) and its tensor-only semantic/panoptic post-processing.
- :mod:`.exporter`: ``export_program`` / ``export_pt2`` / ``export_aoti`` / ``export_onnx`` /
  ``export_onnx_torchscript`` / ``export_torchscript`` / ``export_model`` (used by tools/export_model.py).
- :mod:`.onnx_ops`: the ONNX translation of the deformable-attention operator.
- :mod:`.runtime`: ``ExportedOneFormer``, which runs a file (onnxruntime, the ExportedProgram, the AOTInductor
  package, TorchScript) and returns the eager model's Detectron2-format outputs.
"""
from .exporter import (DEFAULT_OPSET, EXPORT_FORMATS, FORMATS, build_metadata, export_aoti, export_model,  # noqa
                       export_onnx, export_onnx_torchscript, export_program, export_pt2, export_torchscript,
                       format_from_path)
from .graph import POSTPROCESS, TASK_MODES, OneFormerExportModule, PaddedOneFormerExportModule, output_names  # noqa
from .runtime import ExportedOneFormer, read_metadata  # noqa: F401

__all__ = ["DEFAULT_OPSET", "EXPORT_FORMATS", "FORMATS", "POSTPROCESS", "TASK_MODES", "OneFormerExportModule",
           "PaddedOneFormerExportModule", "output_names", "build_metadata", "export_model", "export_program",
           "export_pt2", "export_aoti", "export_onnx", "export_onnx_torchscript", "export_torchscript",
           "format_from_path", "ExportedOneFormer", "read_metadata"]
