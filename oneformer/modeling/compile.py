"""``CompiledNetwork``: the network (backbone → pixel decoder → transformer decoder) under ``torch.compile``.

Used by :class:`oneformer.OneFormer` when MODEL.COMPILE is set (``OneFormerPredictor(..., compile=True)``,
``demo.py --compile``). Pre- and post-processing stay eager: they are Python over variable numbers of segments.

Inference compiles one graph (``fullgraph=True``) whose image height and width are symbolic. They are passed as a
view (B, 3, h, 32, w, 32) of the padded image with only h and w marked dynamic: the network's sizes are then
multiples of its strides by construction (H/4 = 8h, H/32 = h), so the compiler needs no case analysis of rounding
and one graph serves every padded size (a few size buckets at most, where a kernel heuristic of the compiler
differs). A padded size that is not a multiple of 32 (MODEL.ONE_FORMER.SIZE_DIVISIBILITY below 32) gets a graph per
size instead. Training compiles the same network without ``fullgraph`` (the crops are of fixed size).

The compiled functions read the model's parameters at each call, so loading a checkpoint after building the model
needs no recompilation; ``model.to(device)`` recompiles on the next call. MODEL.COMPILE_FREEZE freezes the inference
graph instead, for serving at fixed sizes: inductor then treats the weights as constants, and the CPU linears get
weights packed at compile time (oneDNN's with MODEL.CPU_LINEAR_BACKEND "onednn", see cpu_linear.frozen_graph; else
inductor's own). The graphs are then static, one per padded size (inductor's packed
convolutions do not take symbolic sizes in torch 2.14), and the weights must not change after the first call: a
call after a change (an optimizer step, ``load_state_dict``, an in-place edit) raises instead of computing with the
old ones.

A call that compiles a new graph (the first one, a new size bucket, a new padded size for static graphs) logs a line
when the compiler starts ("compiling the network ...: the first image of each size takes ...") and one when it is
done ("compiled the network in 12.3 s"), at INFO on this module's logger; where logging is not set up at all (no
handler anywhere, e.g. the demo or a plain script), they are printed on stderr instead, as logging's last resort does
for warnings. A first call that takes minutes then does not look hung.
"""
import contextlib
import logging
import sys
import threading
import time
from typing import Callable, Dict, Optional

import torch

from .cpu_linear import frozen_graph

__all__ = ["CompiledNetwork", "BLOCK"]

logger = logging.getLogger(__name__)

BLOCK = 32  # the backbone's largest stride: padded sizes are multiples of it with the shipped configs


class CompiledNetwork:
    """Calls ``network(images, tasks)`` through ``torch.compile``.

    Args:
        network: the eager function, (B, 3, H, W) normalized padded images and (B, C) task embeddings -> the head's
            output dict (``OneFormer._network``).
        backend, mode: passed to ``torch.compile`` (mode "" or None: the default).
        freeze: freeze the inference graph (inductor's ``freezing``: weights become constants); ``module`` (the model
            whose parameters and buffers ``network`` reads) is then watched for changes of its weights.
    """

    def __init__(self, network: Callable[[torch.Tensor, torch.Tensor], Dict], backend: str = "inductor",
                 mode: Optional[str] = None, freeze: bool = False, module: Optional[torch.nn.Module] = None):
        if freeze and module is None:
            raise ValueError("CompiledNetwork(freeze=True) needs the module whose weights get frozen")
        self.network = network
        self.backend = backend
        self.mode = mode or None
        self.freeze = freeze
        self.module = module
        self._frozen_weights = None
        self._eval = self._static = self._train = None

    def _compile(self, fn, **kwargs):
        return torch.compile(fn, backend=self.backend, mode=self.mode, **kwargs)

    def _weights(self):
        return tuple((id(t), t._version) for t in (*self.module.parameters(), *self.module.buffers()))

    def _check_frozen_weights(self) -> None:
        """Raise if the weights changed since the inference graph froze them (see the module docstring)."""
        if not self.freeze or torch.is_grad_enabled():
            return
        weights = self._weights()
        if self._frozen_weights is None:
            self._frozen_weights = weights
        elif weights != self._frozen_weights:
            raise RuntimeError(
                "MODEL.COMPILE_FREEZE: the model's weights changed after torch.compile froze them into the inference "
                "graph (an optimizer step, load_state_dict or an in-place edit); the graph would compute with the "
                "old ones. Load the weights before the first call, or set MODEL.COMPILE_FREEZE False (e.g. for "
                "evaluation during training)")

    def _blocked(self, blocked: torch.Tensor, tasks: torch.Tensor) -> Dict:
        B, C, h, d, w, _ = blocked.shape
        return self.network(blocked.reshape(B, C, h * d, w * d), tasks)

    def __call__(self, images: torch.Tensor, tasks: torch.Tensor, training: bool = False) -> Dict:
        """images (B, 3, H, W), tasks (B, C) -> the network's outputs, computed by the compiled graph."""
        with _announce_compiles(self.backend, tuple(images.shape), training):
            return self._call(images, tasks, training)

    def _call(self, images: torch.Tensor, tasks: torch.Tensor, training: bool):
        if training:
            if self._train is None:
                self._train = self._compile(self.network)
            return self._train(images, tasks)
        B, C, H, W = images.shape
        if self.freeze or H % BLOCK or W % BLOCK:  # frozen weights: static graphs (see the module docstring)
            if self._static is None:
                if not self.freeze:
                    logger.info("torch.compile: padded size %dx%d is not a multiple of %d, so each input size gets "
                                "its own graph (MODEL.ONE_FORMER.SIZE_DIVISIBILITY 32 gives one graph for all "
                                "sizes)", H, W, BLOCK)
                self._static = self._compile(self.network, fullgraph=True, dynamic=False)
            with self._capture_config():
                return self._static(images, tasks)
        if self._eval is None:
            self._eval = self._compile(self._blocked, fullgraph=True)
        blocked = images.reshape(B, C, H // BLOCK, BLOCK, W // BLOCK, BLOCK)
        torch._dynamo.maybe_mark_dynamic(blocked, 2)
        torch._dynamo.maybe_mark_dynamic(blocked, 4)
        with self._capture_config():
            return self._eval(blocked, tasks)

    def _capture_config(self):
        """inductor's ``freezing`` while the inference graph compiles (at its first call); as a config patch, not as
        ``torch.compile(options=...)``, which does not reach the step that turns the weights into constants. With it,
        the oneDNN linears (MODEL.CPU_LINEAR_BACKEND "onednn") enter the graph with packed weights
        (:func:`~oneformer.modeling.cpu_linear.frozen_graph`)."""
        self._check_frozen_weights()
        if self.freeze and self.backend == "inductor":
            from torch._inductor import config as inductor_config

            stack = contextlib.ExitStack()
            stack.enter_context(inductor_config.patch(freezing=True))
            stack.enter_context(frozen_graph())
            return stack
        return contextlib.nullcontext()


def _say(message: str, *args) -> None:
    """INFO on this module's logger; on stderr where no logging handler exists at all (logging not set up)."""
    if logger.hasHandlers():
        logger.info(message, *args)
    else:
        print(message % args, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _announce_compiles(backend: str, shape: tuple, training: bool):
    """Say when torch.compile starts compiling during the block (dynamo's compile callbacks, which run in the
    compiling thread: compiles of other threads are not ours) and, after the block, how long it took."""
    thread = threading.get_ident()
    state = {"started": None, "seconds": 0.0}

    def start(_args) -> None:
        if threading.get_ident() != thread:
            return
        if state["started"] is None and not state["seconds"]:  # several frames (training) make one message
            what = "training batch" if training else "input"
            _say("compiling the network (torch.compile, backend %r) for a new %s size %s: the first image of each "
                 "size takes seconds (small models) to minutes (large ones), later images of that size reuse the "
                 "graph", backend, what, "x".join(str(s) for s in shape))
        state["started"] = time.perf_counter()

    def end(_args) -> None:
        if threading.get_ident() == thread and state["started"] is not None:
            state["seconds"] += time.perf_counter() - state["started"]
            state["started"] = None

    callbacks = torch._dynamo.callback_handler
    callbacks.register_start_callback(start)
    callbacks.register_end_callback(end)
    try:
        yield
    finally:
        # torch._dynamo.reset() inside the block would have removed them already
        for remove, callback in ((callbacks.remove_start_callback, start), (callbacks.remove_end_callback, end)):
            with contextlib.suppress(ValueError):
                remove(callback)
    if state["seconds"]:
        _say("compiled the network in %.1f s", state["seconds"])
