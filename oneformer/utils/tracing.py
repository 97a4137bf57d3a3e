"""Whether the code runs under a trace (``torch.jit.trace`` / ``torch.onnx.export``)."""
import torch

__all__ = ["is_tracing"]


def is_tracing() -> bool:
    """True inside torch.jit.trace / torch.onnx.export: sizes are then traced 0-d tensors, so shape checks are skipped
    and size-dependent branches take the form that is valid for every size (see tools/export_model.py); CPU inference
    shortcuts that the exporters cannot express are skipped too."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
