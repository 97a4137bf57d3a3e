"""oneformer/utils/device.py: explicit choices win; devices the machine lacks are refused in one line."""
import pytest
import torch

from oneformer.utils.device import DeviceError, check_device, choose_device


@pytest.mark.parametrize("cuda", [False, True])
def test_choose_device_prefers_explicit_choices(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert choose_device() == ("cuda" if cuda else "cpu")
    assert choose_device("cpu") == "cpu"
    assert choose_device(None, ["MODEL.WEIGHTS", "x.pth", "MODEL.DEVICE", "cpu"]) == "cpu"
    assert choose_device("cuda:1", ["MODEL.DEVICE", "cuda:1"]) == "cuda:1"


def test_check_device_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_device("cpu", "fix")
    with pytest.raises(DeviceError, match=r"^no CUDA device \(asked for 'cuda:0'; .*\); use --device cpu$"):
        check_device("cuda:0", "use --device cpu")
    with pytest.raises(DeviceError, match="'gpu' is not a device"):
        check_device("gpu", "fix")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device("cuda", "fix")
    with pytest.raises(DeviceError, match=r"^2 CUDA devices needed \('cuda', 2 processes\) but this machine has 1; "):
        check_device("cuda", "fix", count=2)
    with pytest.raises(DeviceError, match=r"^2 CUDA devices needed \('cuda:1'\)"):
        check_device("cuda:1", "fix")
