"""``OneFormerCheckpointer``: Detectron2's checkpointer with a grouped, explained report of what was not loaded,
safe loading and crash-safe saving.

Typical cases it explains: fine-tuning from a checkpoint with another class count (``class_embed``,
``criterion.empty_weight``) or query count (``query_embed``): those tensors keep the model's fresh initialization;
loading a training checkpoint into an inference build: the text branch (training only) is ignored. A checkpoint that
shares no tensor with the model is refused with an error that says so.

Safe loading: ``.pth`` files are read with ``torch.load(weights_only=True)`` (explicitly, whatever torch's default),
Detectron2 ``.pkl`` files and plain ``pickle.dump`` output of any name with :class:`RestrictedUnpickler` (plain
containers, numbers, strings, numpy arrays and dtypes only). A file that needs anything else raises :class:`UnsafeCheckpointError`, which names the opt-in:
``OneFormerCheckpointer(..., allow_unsafe_pickle=True)`` / config ``MODEL.ALLOW_UNSAFE_PICKLE True`` / demo
``--allow-unsafe-pickle``. Truncated or corrupt files raise :class:`CheckpointReadError` naming the file; a URL
that cannot be fetched raises :class:`CheckpointDownloadError` naming the URL, its place in the download cache and
how to pass a local file.

Crash-safe saving: ``save`` writes ``<name>.pth`` and ``last_checkpoint`` to a temporary file in the same directory,
flushes it to disk and renames it over the target (``os.replace``, atomic on POSIX and Windows), so a crash or kill
during saving leaves the previous checkpoint and ``last_checkpoint`` as they were and no partial file under the final
name.
"""
import io
import logging
import os
import pickle
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import get_missing_parameters_message, get_unexpected_parameters_message

__all__ = [
    "OneFormerCheckpointer",
    "LoadReport",
    "RestrictedUnpickler",
    "UnsafeCheckpointError",
    "CheckpointReadError",
    "CheckpointDownloadError",
    "load_pkl_restricted",
    "UNSAFE_PICKLE_OPT_IN",
]

UNSAFE_PICKLE_OPT_IN = (
    "If you trust this file, allow full pickle loading (it can run arbitrary code): "
    "OneFormerCheckpointer(..., allow_unsafe_pickle=True), config MODEL.ALLOW_UNSAFE_PICKLE True, "
    "or demo/demo.py --allow-unsafe-pickle."
)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs full pickle loading, which was not allowed; the message names the file and the opt-in."""


class CheckpointReadError(RuntimeError):
    """A checkpoint file is truncated, corrupt or not a checkpoint; the message names the file."""


class CheckpointDownloadError(CheckpointReadError):
    """A checkpoint URL could not be fetched (offline, host or file not found); the message names the URL, the file
    Detectron2 caches it as and how to pass a local file instead."""


# globals a Detectron2 .pkl (numpy arrays in dicts) may reference; numpy 2 moved numpy.core to numpy._core
_NUMPY_GLOBALS = {
    (module, name)
    for core in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{core}.multiarray", "_reconstruct"),
        (f"{core}.multiarray", "scalar"),
        (f"{core}.numeric", "_frombuffer"),
    )
} | {("numpy", "ndarray"), ("numpy", "dtype")}
_SAFE_GLOBALS = _NUMPY_GLOBALS | {
    ("collections", "OrderedDict"),
    *((builtins, name) for builtins in ("builtins", "__builtin__") for name in ("set", "frozenset", "complex")),
    ("_codecs", "encode"),  # how protocol-2 pickles store bytes (e.g. numpy array data)
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only resolves the globals plain data needs: ``collections.OrderedDict``, sets, complex
    (also under Python 2's ``__builtin__`` name, as protocol-2 pickles spell it),
    ``_codecs.encode`` and numpy's array/dtype/scalar reconstructors (``numpy.core`` and numpy 2's ``numpy._core``).
    Any other global (a class, ``os.system``, ...) raises :class:`UnsafeCheckpointError` before it is called."""

    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeCheckpointError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(f"persistent id {pid!r} is not allowed")


def load_pkl_restricted(filename: str, allow_unsafe_pickle: bool = False) -> Any:
    """Unpickle ``filename`` (latin1 strings, for Python 2 files) with :class:`RestrictedUnpickler`, or with plain
    ``pickle`` when ``allow_unsafe_pickle``. Refusals name the file and the opt-in."""
    with open(filename, "rb") as f:
        data = f.read()
    if allow_unsafe_pickle:
        return pickle.loads(data, encoding="latin1")
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(
            f"{filename}: refused to unpickle it: {e}. Plain pickle checkpoints (Detectron2 .pkl files, pickle.dump "
            "output) are read with a restricted unpickler that only builds containers, numbers, strings and numpy "
            f"arrays. {UNSAFE_PICKLE_OPT_IN}"
        ) from e
    except Exception as e:
        raise CheckpointReadError(f"{filename}: not a readable pickle file, truncated or corrupt? "
                                  f"({type(e).__name__}: {e})") from e


# what torch.save's legacy (non-zip) format starts with: its magic number, pickled with protocol 2
_LEGACY_TORCH_PREFIX = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)


def _is_plain_pickle(filename: str) -> bool:
    """Whether ``filename`` was written by ``pickle.dump`` (protocol >= 2) rather than ``torch.save``: torch's
    weights-only reader calls such a file corrupt ("Unsupported operand"), whatever it holds."""
    import zipfile

    if not os.path.isfile(filename) or zipfile.is_zipfile(filename):
        return False
    with open(filename, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_PREFIX))
    return head[:1] == b"\x80" and head != _LEGACY_TORCH_PREFIX


def _weights_only_reason(e: Exception) -> str:
    """The informative line of torch's weights-only error (e.g. "Unsupported global: GLOBAL pkg.Cls"), without
    torch's generic advice around it."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    boilerplate = ("Weights only load failed", "Check the documentation", "(1)", "(2)", "Please file an issue")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(boilerplate)]
    return lines[0].split(" was not an allowed global")[0] if lines else type(e).__name__


def _atomic_write(path: str, write: Callable[[Any], None]) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, fsync it, then ``os.replace`` it onto ``path``.
    On any error the temporary file is removed and ``path`` is untouched."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # not tempfile.mkstemp: its 0600 mode would make checkpoints unreadable to others; this honours the umask
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (not possible on every platform)
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


TEXT_BRANCH = ("text_encoder.", "text_projector.", "prompt_ctx.")


def _shape_reason(key: str, ckpt_shape: Tuple[int, ...], model_shape: Tuple[int, ...]) -> str:
    if key.endswith(("class_embed.weight", "class_embed.bias")) or key == "criterion.empty_weight":
        return (f"class count differs: checkpoint {ckpt_shape[0] - 1} classes, model {model_shape[0] - 1} "
                "(MODEL.SEM_SEG_HEAD.NUM_CLASSES; +1 for no-object)")
    if key.endswith("query_embed.weight"):
        return (f"query count differs: checkpoint {ckpt_shape[0]}, model {model_shape[0]} "
                "(MODEL.ONE_FORMER.NUM_OBJECT_QUERIES)")
    return "shape differs"


@dataclass
class LoadReport:
    """What a load did not take over, and why."""

    reinitialized: List[Tuple[str, Tuple[int, ...], Tuple[int, ...], str]] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    loaded: int = 0

    @property
    def clean(self) -> bool:
        return not (self.reinitialized or self.missing or self.unexpected)

    def format(self) -> str:
        lines = [f"loaded {self.loaded} tensors"]
        if self.reinitialized:
            lines.append(f"{len(self.reinitialized)} tensors re-initialized because their shape differs "
                         "(normal when fine-tuning with another class or query count):")
            for key, ckpt, model, reason in self.reinitialized:
                lines.append(f"  {key}: checkpoint {tuple(ckpt)} vs model {tuple(model)} — {reason}")
        if self.missing:
            lines.append(f"{len(self.missing)} tensors not in the checkpoint keep their initialization:")
            lines.append(get_missing_parameters_message(self.missing).split("\n", 1)[-1])
        text = [k for k in self.unexpected if k.startswith(TEXT_BRANCH)]
        other = [k for k in self.unexpected if not k.startswith(TEXT_BRANCH)]
        if text:
            lines.append(f"{len(text)} text-branch tensors ignored (training only; the model was built with "
                         "MODEL.IS_TRAIN False)")
        if other:
            lines.append(f"{len(other)} checkpoint tensors not used by the model:")
            lines.append(get_unexpected_parameters_message(other).split("\n", 1)[-1])
        return "\n".join(lines)


class OneFormerCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer whose loads leave a :class:`LoadReport` in ``last_report`` and log it once, that loads
    only plain data unless ``allow_unsafe_pickle``, and whose saves are atomic (see the module docstring)."""

    def __init__(self, model, save_dir="", *, save_to_disk=None, allow_unsafe_pickle: bool = False,
                 **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.last_report = None
        self.allow_unsafe_pickle = bool(allow_unsafe_pickle)
        self.logger = logging.getLogger(__name__)

    # ------------------------------------------------------------------------------------------------ loading
    def load(self, path, *args, **kwargs):
        if path and "://" not in str(path) and not os.path.isfile(str(path).split("?", 1)[0]):
            raise FileNotFoundError(f"Checkpoint file {path} does not exist")
        if path and str(path).startswith(("http://", "https://")):
            self._download(str(path))
        try:
            return super().load(path, *args, **kwargs)
        finally:  # Detectron2 leaves it set when a load raises, and then refuses every later load
            self._parsed_url_during_load = None

    def _download(self, url: str) -> str:
        """The local copy of ``url`` (downloaded into Detectron2's cache unless there already, as ``load`` would);
        CheckpointDownloadError in one line instead of urllib's traceback."""
        from iopath.common.file_io import get_cache_dir

        plain = url.split("?", 1)[0]
        try:
            return self.path_manager.get_local_path(plain)
        except OSError as e:  # URLError, HTTPError, timeouts and connection errors are all OSErrors
            parts = plain.split("://", 1)[1].split("/", 1)
            cached = os.path.join(get_cache_dir(), parts[1] if len(parts) > 1 else parts[0])
            reason = getattr(e, "reason", None) or e
            raise CheckpointDownloadError(
                f"cannot download the checkpoint {plain} ({type(e).__name__}: {reason}); offline? Put the file at "
                f"{cached} (Detectron2's download cache, $FVCORE_CACHE), or pass a local file: demo/demo.py --weights "
                "PATH, OneFormerPredictor weights=PATH, or MODEL.WEIGHTS PATH"
            ) from None

    def _load_model(self, checkpoint):
        source = checkpoint.get("__source__", "the checkpoint")
        incompatible = super()._load_model(checkpoint)
        model_keys = self.model.state_dict().keys()
        reinit = [(k, c, m, _shape_reason(k, c, m)) for k, c, m in incompatible.incorrect_shapes]
        missing = [k for k in incompatible.missing_keys if k not in {r[0] for r in reinit}]
        report = LoadReport(reinitialized=reinit, missing=missing, unexpected=list(incompatible.unexpected_keys),
                            loaded=len(model_keys) - len(missing) - len(reinit))
        self.last_report = report
        if report.loaded == 0 and len(model_keys) > 0:
            raise ValueError(
                f"{source} shares no tensor with this model ({len(report.unexpected)} unrelated keys, e.g. "
                f"{sorted(report.unexpected)[:3]}): it is a checkpoint of another model, or the config does not "
                "match it"
            )
        return incompatible

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            data = self._load_pkl(filename)
        elif filename.endswith(".pyth"):  # pycls, as Detectron2 reads it, but through the safe path
            data = self._torch_load(filename)
            if not isinstance(data, dict) or "model_state" not in data:
                raise CheckpointReadError(f"{filename}: a pycls .pyth checkpoint must contain 'model_state'")
            state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            data = {"model": state, "__author__": "pycls", "matching_heuristics": True}
        elif _is_plain_pickle(filename):  # through the restricted unpickler, as a .pkl, so a refusal names the global
            data = load_pkl_restricted(filename, self.allow_unsafe_pickle)
            if isinstance(data, dict) and not isinstance(data.get("model"), dict):
                data = {"model": data}
        else:
            data = super()._load_file(filename)  # .pth: reads through self._torch_load
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            raise CheckpointReadError(f"{filename}: not a checkpoint (expected a dict of tensors, or one under "
                                      f"'model'; got {type(data).__name__})")
        data["__source__"] = filename
        return data

    def _load_pkl(self, filename) -> Dict[str, Any]:
        """A Detectron2 model-zoo / Caffe2 .pkl, restricted unpickling unless allowed (Detectron2's conventions)."""
        data = load_pkl_restricted(filename, self.allow_unsafe_pickle)
        if not isinstance(data, dict):
            raise CheckpointReadError(f"{filename}: expected a dict in the .pkl file, got {type(data).__name__}")
        if "model" in data and "__author__" in data:  # Detectron2 model-zoo format
            self.logger.info("Reading a file from '{}'".format(data["__author__"]))
            return data
        if "blobs" in data:  # Caffe2 / Detectron1 detection models
            data = data["blobs"]
        data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}

    def _torch_load(self, f):
        """``torch.load`` with ``weights_only=not allow_unsafe_pickle``; clear errors for refused and broken files."""
        if isinstance(f, str) and os.path.isfile(f) and os.path.getsize(f) == 0:
            raise CheckpointReadError(f"{f}: the checkpoint file is empty (0 bytes)")
        try:
            return torch.load(f, map_location=torch.device("cpu"), weights_only=not self.allow_unsafe_pickle)
        except FileNotFoundError:
            raise
        except pickle.UnpicklingError as e:
            reason = _weights_only_reason(e)
            if not self.allow_unsafe_pickle and any(w in reason for w in ("GLOBAL", "allowlisted", "Can only")):
                raise UnsafeCheckpointError(
                    f"{f}: refused to load it with torch's weights-only unpickler ({reason}). The file holds Python "
                    f"objects besides tensors and plain containers. {UNSAFE_PICKLE_OPT_IN}"
                ) from e
            raise CheckpointReadError(f"{f}: not a readable PyTorch checkpoint, truncated or corrupt? ({reason})"
                                      ) from e
        except Exception as e:
            first = str(e).splitlines()[0].split(". ")[0] if str(e) else ""
            raise CheckpointReadError(f"{f}: not a readable PyTorch checkpoint, truncated or corrupt? "
                                      f"({type(e).__name__}: {first})") from e

    def _log_incompatible_keys(self, incompatible) -> None:
        report = self.last_report
        if report is None or report.clean:
            return
        self.logger.warning("Checkpoint load report: " + report.format())

    # ------------------------------------------------------------------------------------------------ saving
    def _local_save_dir(self) -> bool:
        return "://" not in str(self.save_dir)

    def save(self, name: str, **kwargs: Any) -> None:
        """fvcore's ``save`` (model, checkpointables and ``kwargs`` into ``<save_dir>/<name>.pth``, then
        ``last_checkpoint``), both written atomically."""
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._local_save_dir():
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        assert os.path.basename(save_file) == basename, basename
        self.logger.info("Saving checkpoint to {}".format(save_file))
        _atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._local_save_dir():
            return super().tag_last_checkpoint(last_filename_basename)
        _atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                      lambda f: f.write(last_filename_basename.encode("utf-8")))
