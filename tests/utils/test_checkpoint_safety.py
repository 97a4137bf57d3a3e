"""Safe checkpoint loading (weights-only .pth, restricted .pkl, explicit opt-in) and crash-safe saving."""
import argparse
import collections
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from oneformer.predictor import OneFormerPredictor
from oneformer.utils import checkpoint as ckpt_module
from oneformer.utils.checkpoint import (
    CheckpointReadError,
    OneFormerCheckpointer,
    RestrictedUnpickler,
    UnsafeCheckpointError,
    load_pkl_restricted,
)
from tests.tiny import tiny_cfg

OPT_IN = r"allow_unsafe_pickle=True\), config MODEL.ALLOW_UNSAFE_PICKLE True, or demo/demo.py --allow-unsafe-pickle"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


@pytest.fixture(scope="module")
def fresh(model):
    """Another model of the same layout with other weights."""
    torch.manual_seed(1)
    return build_model(tiny_cfg())


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------- .pth


def test_pth_with_python_objects_is_refused_unless_allowed(model, fresh, tmp_path):
    path = str(tmp_path / "with_args.pth")
    # e.g. a training script that stored its argparse namespace next to the weights
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"with_args.pth: refused to load it with torch's weights-only "
                                                    r"unpickler \(Unsupported global: GLOBAL argparse.Namespace\)"
                                                    rf".*{OPT_IN}"):
        OneFormerCheckpointer(fresh).load(path)
    assert not _same_weights(model, fresh)
    extra = OneFormerCheckpointer(fresh, allow_unsafe_pickle=True).load(path)
    assert _same_weights(model, fresh) and extra["args"].lr == 0.1


def test_plain_pth_loads_weights_only(model, tmp_path, monkeypatch):
    path = str(tmp_path / "plain.pth")
    torch.save({"model": model.state_dict(), "iteration": 7}, path)
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    other = build_model(tiny_cfg())
    assert OneFormerCheckpointer(other).load(path)["iteration"] == 7
    assert seen == [True]  # explicit, whatever torch's default
    assert _same_weights(model, other)


def test_config_key_and_predictor_pass_the_opt_in(model, tmp_path):
    path = str(tmp_path / "with_args.pth")
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    cfg = tiny_cfg()
    cfg.MODEL.WEIGHTS = path
    assert cfg.MODEL.ALLOW_UNSAFE_PICKLE is False  # the default
    with pytest.raises(UnsafeCheckpointError, match="MODEL.ALLOW_UNSAFE_PICKLE True"):
        OneFormerPredictor(cfg)
    cfg.MODEL.ALLOW_UNSAFE_PICKLE = True
    assert _same_weights(model, OneFormerPredictor(cfg).model)


def test_broken_pth_names_the_file(model, tmp_path):
    good = str(tmp_path / "good.pth")
    torch.save({"model": model.state_dict()}, good)
    data = open(good, "rb").read()
    for name, content in (("truncated.pth", data[: len(data) // 2]), ("empty.pth", b""), ("text.pth", b"hello")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises((CheckpointReadError, UnsafeCheckpointError), match=rf"{name}: "):
            OneFormerCheckpointer(model).load(str(path))
    with pytest.raises(FileNotFoundError, match="Checkpoint file .*nowhere.pth does not exist"):
        OneFormerCheckpointer(model).load(str(tmp_path / "nowhere.pth"))


def test_checkpointer_usable_after_a_refused_load(model, tmp_path):
    """Detectron2 leaves its URL state set when a load raises and then asserts on every later load."""
    bad = str(tmp_path / "bad.pth")
    torch.save({"model": {}, "args": argparse.Namespace()}, bad)
    good = str(tmp_path / "good.pth")
    torch.save({"model": model.state_dict()}, good)
    checkpointer = OneFormerCheckpointer(model)
    with pytest.raises(UnsafeCheckpointError):
        checkpointer.load(bad)
    checkpointer.load(good)


# ---------------------------------------------------------------------------------------------- .pkl


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_detectron2_pkl_loads_through_the_restricted_unpickler(model, fresh, tmp_path, monkeypatch, protocol):
    weights = collections.OrderedDict((k, v.numpy().copy()) for k, v in model.state_dict().items())
    path = str(tmp_path / f"d2_p{protocol}.pkl")
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "tests", "matching_heuristics": False,
                     "step": np.int64(3)}, f, protocol=protocol)

    def no_plain_pickle(*args, **kwargs):
        raise AssertionError("the restricted path must be used")

    monkeypatch.setattr(pickle, "loads", no_plain_pickle)
    monkeypatch.setattr(pickle, "load", no_plain_pickle)
    target = build_model(tiny_cfg())
    OneFormerCheckpointer(target).load(path)
    assert _same_weights(model, target)


class _Evil:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _EvilEval:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (eval, (f"__import__('os').system({self.command!r})",))


@pytest.mark.parametrize("payload", [_Evil, _EvilEval])
@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_malicious_pickle_is_refused_without_running(model, tmp_path, payload, suffix):
    marker = tmp_path / "pwned"
    path = str(tmp_path / f"evil{suffix}")
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    if suffix == ".pkl":
        with open(path, "wb") as f:
            pickle.dump({"model": weights, "__author__": payload(f"touch {marker}")}, f, protocol=2)
        message = (r"evil.pkl: refused to unpickle it: global (posix|builtins|__builtin__)\.(system|eval) is not "
                   rf"allowed.*{OPT_IN}")
    else:
        torch.save({"model": model.state_dict(), "x": payload(f"touch {marker}")}, path)
        message = rf"evil.pth: refused to load it.*{OPT_IN}"
    with pytest.raises(UnsafeCheckpointError, match=message):
        OneFormerCheckpointer(model).load(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [_Evil, _EvilEval])
def test_plain_pickle_pth_is_refused_with_the_opt_in(model, tmp_path, payload):
    """pickle.dump output named .pth (was: "not a readable PyTorch checkpoint, truncated or corrupt? (Unsupported
    operand 149)"): read like a .pkl, so the refusal names the global and the opt-in."""
    marker = tmp_path / "pwned"
    path = str(tmp_path / "evil.pth")
    with open(path, "wb") as f:
        pickle.dump({"model": payload(f"touch {marker}")}, f)  # protocol 5: the FRAME opcode is 149
    message = (r"evil.pth: refused to unpickle it: global (posix|builtins|__builtin__)\.(system|eval) is not "
               rf"allowed.*{OPT_IN}")
    with pytest.raises(UnsafeCheckpointError, match=message):
        OneFormerCheckpointer(model).load(path)
    assert not marker.exists()
    # plain data in a plain pickle loads; torch.save's legacy (non-zip) format still goes through torch.load
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    for name, write in (("plain.pth", lambda f: pickle.dump({"model": weights}, f)),
                        ("legacy.pth", lambda f: torch.save({"model": model.state_dict()}, f,
                                                            _use_new_zipfile_serialization=False))):
        with open(tmp_path / name, "wb") as f:
            write(f)
        checkpointer = OneFormerCheckpointer(model)
        checkpointer.load(str(tmp_path / name))
        assert checkpointer.last_report.clean


def test_restricted_unpickler_allows_only_plain_data():
    import io

    plain = {"a": [1, 2.5, "x", b"y", None, True], "b": (1, {2, 3}, frozenset([4]), 1j),
             "c": collections.OrderedDict(d=np.arange(3, dtype=np.float32)), "s": np.float64(2.0)}
    for protocol in (2, 4, 5):
        out = RestrictedUnpickler(io.BytesIO(pickle.dumps(plain, protocol=protocol))).load()
        assert out["a"] == plain["a"] and out["b"] == plain["b"] and out["s"] == 2.0
        np.testing.assert_array_equal(out["c"]["d"], plain["c"]["d"])
    for obj in (argparse.Namespace(), collections.Counter("ab"), np.random.RandomState(0)):
        with pytest.raises(UnsafeCheckpointError, match="is not allowed"):
            RestrictedUnpickler(io.BytesIO(pickle.dumps(obj, protocol=2))).load()


def test_pkl_opt_in_and_broken_pkl(tmp_path):
    path = str(tmp_path / "ns.pkl")
    with open(path, "wb") as f:
        pickle.dump({"model": {}, "ns": argparse.Namespace(x=1)}, f)
    with pytest.raises(UnsafeCheckpointError, match=OPT_IN):
        load_pkl_restricted(path)
    assert load_pkl_restricted(path, allow_unsafe_pickle=True)["ns"].x == 1
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(open(path, "rb").read()[:20])
    with pytest.raises(CheckpointReadError, match="broken.pkl: not a readable pickle file"):
        load_pkl_restricted(str(broken))


# ---------------------------------------------------------------------------------------------- saving


def _files(d):
    return sorted(os.listdir(d))


def test_crash_during_save_leaves_the_previous_checkpoint(model, tmp_path, monkeypatch):
    checkpointer = OneFormerCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    previous = (tmp_path / "model_0000001.pth").read_bytes()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"

    def crash(obj, f, *args, **kwargs):
        f.write(b"half of a checkpoint")
        raise RuntimeError("simulated crash in torch.save (disk full, killed, ...)")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        checkpointer.save("model_0000003", iteration=3)
    assert _files(tmp_path) == ["last_checkpoint", "model_0000001.pth"]  # no partial or temporary file
    assert (tmp_path / "model_0000001.pth").read_bytes() == previous
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    monkeypatch.undo()
    assert OneFormerCheckpointer(build_model(tiny_cfg()), str(tmp_path)).resume_or_load("", resume=True)[
        "iteration"] == 1


def test_crash_while_tagging_keeps_last_checkpoint(model, tmp_path, monkeypatch):
    checkpointer = OneFormerCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == "last_checkpoint":
            raise OSError("simulated crash before the rename")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt_module.os, "replace", replace)
    with pytest.raises(OSError, match="simulated crash"):
        checkpointer.save("model_0000003", iteration=3)
    # the new file is complete (renamed into place), the tag still names the previous one, no temporary file
    assert _files(tmp_path) == ["last_checkpoint", "model_0000001.pth", "model_0000003.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert torch.load(tmp_path / "model_0000003.pth", weights_only=True)["iteration"] == 3


def test_saved_files_are_readable_by_others(model, tmp_path):
    OneFormerCheckpointer(model, str(tmp_path)).save("m")
    mode = os.stat(tmp_path / "m.pth").st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
