"""Whether the code runs under a trace: TorchScript (``torch.jit.trace`` / ``torch.onnx.export``) or a graph
capture (``torch.compile``, ``torch.export``, the dynamo-based ONNX exporter)."""
import torch

__all__ = ["is_exporting", "is_tracing"]


def is_tracing() -> bool:
    """True inside torch.jit.trace / torch.onnx.export and while torch.compile / torch.export capture a graph: sizes are
    then traced or symbolic, so shape checks are skipped and size-dependent branches take the form that is valid for
    every size (see tools/export_model.py); the eager CPU inference shortcuts (oneDNN linears, chunked MLPs, windowed
    attention loops, the written-out softmax) are skipped too, since a compiler fuses and packs these itself and
    their Python loops over sizes would specialize a graph to one input size."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def is_exporting() -> bool:
    """True while torch.export captures a graph (also the dynamo-based ONNX exporter and AOTInductor), False in eager
    code and in torch.compile graphs.

    ``torch.compiler.is_exporting()`` gives the same outside graphs, but inside a torch.compile graph torch 2.11's
    dynamo answers it with the constant True (later releases read the flag, as here), which would take the
    export-only forms in every compiled graph. Dynamo reads this module attribute at trace time and guards on it.
    """
    return bool(torch.compiler._is_exporting_flag)  # what torch.compiler.is_exporting() returns in eager code
