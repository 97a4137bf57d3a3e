"""oneformer.utils.tracing: is_exporting is True under torch.export only, also inside torch.compile graphs (where
torch 2.11's torch.compiler.is_exporting() is the constant True)."""
import torch

from oneformer.utils.tracing import is_exporting, is_tracing


class _Probe(torch.nn.Module):
    def forward(self, x):
        return x + (1.0 if is_exporting() else 0.0) + (10.0 if is_tracing() else 0.0)


def test_is_exporting_in_eager_compile_and_export():
    x = torch.zeros(2)
    probe = _Probe()
    assert probe(x).tolist() == [0.0, 0.0]
    torch._dynamo.reset()
    assert torch.compile(probe, fullgraph=True, backend="eager")(x).tolist() == [10.0, 10.0]
    exported = torch.export.export(probe, (x,))
    assert exported.module()(x).tolist() == [11.0, 11.0]
    assert not is_exporting()
