"""No torch.jit deprecation note from the project's own commands (issue 14): importing the package, and the CLIs'
start-up, print none even with every warning shown (``-W always``)."""
import subprocess
import sys

import pytest

from tests.tiny import REPO

COMMANDS = {
    "import": ["-c", "import oneformer, oneformer.train_net, oneformer.predictor, oneformer.export, "
                     "oneformer.evaluation"],
    "train_net": ["train_net.py", "--help"],
    "demo": ["demo/demo.py", "--help"],
    "export_model": ["tools/export_model.py", "--help"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_torch_jit_deprecation_note(name):
    proc = subprocess.run([sys.executable, "-W", "always", *COMMANDS[name]], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch.jit" not in proc.stderr, proc.stderr[-2000:]
