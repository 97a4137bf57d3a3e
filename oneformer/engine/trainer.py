"""Training steps that skip non-finite updates (``SOLVER.MAX_CONSECUTIVE_NONFINITE``, see ``config.py``).

``NonFiniteGuardTrainer`` / ``NonFiniteGuardAMPTrainer`` are Detectron2's ``SimpleTrainer`` / ``AMPTrainer`` whose
``run_step`` checks, after the backward pass, that the loss and the gradients are finite (with an enabled fp16
GradScaler only the loss: the scaler checks the gradients itself and skips overflowing steps). A non-finite step
is skipped (the weights and the optimizer state stay as they were; the iteration still counts for the LR schedule
and checkpoints), logged with the iteration and the offending loss terms, and counted in the scalar ``skipped_nonfinite_steps`` (running total, also for the scaler's skips,
written every iteration, kept in checkpoints). After ``max_consecutive_nonfinite`` consecutive skips training stops
with a FloatingPointError that says what to try. With several processes the decision is all-reduced, so every
process skips the same steps. ``max_consecutive_nonfinite <= 0`` gives Detectron2's ``run_step`` unchanged (for
AMP the same steps without the check: a non-finite loss raises in the metric writer, as in Detectron2).

AMP runs on the model's device through ``torch.autocast`` and ``torch.amp.GradScaler`` (enabled only for float16 on
CUDA), not through ``torch.cuda.amp``: training with AMP on CPU prints no GradScaler warning.

``train_net.Trainer`` builds them in place of Detectron2's classes.
"""
import contextlib
import logging
import time

import torch
import torch.distributed as dist
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

__all__ = ["NonFiniteGuardTrainer", "NonFiniteGuardAMPTrainer", "NONFINITE_ADVICE", "amp_grad_scaler"]

logger = logging.getLogger(__name__)

NONFINITE_ADVICE = (
    "Things to try: a lower SOLVER.BASE_LR (or a longer SOLVER.WARMUP_ITERS); gradient clipping "
    "(SOLVER.CLIP_GRADIENTS.ENABLED True, CLIP_TYPE full_model); AMP off (SOLVER.AMP.ENABLED False) or "
    "SOLVER.AMP.PRECISION bfloat16; checking the data (python tools/validate_dataset.py <dataset>) for broken images "
    "or annotations. SOLVER.MAX_CONSECUTIVE_NONFINITE sets how many skips in a row are tolerated (0 disables the "
    "check)."
)


def _all_finite(tensors) -> torch.Tensor:
    """A 0-dim bool tensor: no NaN/Inf in any of ``tensors`` (one fused max-abs reduction per device)."""
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return torch.tensor(True)
    norms = torch._foreach_norm(tensors, float("inf"))  # NaN propagates, Inf stays Inf
    return torch.stack([n.float().to(norms[0].device) for n in norms]).isfinite().all()


class _NonFiniteGuard:
    """The shared ``run_step``; mixed into SimpleTrainer and AMPTrainer below."""

    max_consecutive_nonfinite = 10

    def _init_guard(self, max_consecutive_nonfinite: int) -> None:
        self.max_consecutive_nonfinite = int(max_consecutive_nonfinite)
        self.skipped_nonfinite_steps = 0
        self.consecutive_nonfinite_steps = 0

    def _forward_backward(self, data):
        """Forward (under autocast for AMP) and backward; returns (loss_dict, total loss, enabled grad scaler)."""
        amp = isinstance(self, AMPTrainer)
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        # torch.autocast for the model's device (Detectron2's AMPTrainer insists on CUDA and uses torch.cuda.amp)
        autocast = torch.autocast(self.device_type, dtype=self.precision) if amp else contextlib.nullcontext()
        with autocast:
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses, loss_dict = loss_dict, {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        scaler = self.grad_scaler if amp and self.grad_scaler.is_enabled() else None
        (scaler.scale(losses) if scaler is not None else losses).backward()
        if amp and self.log_grad_scaler:
            get_event_storage().put_scalar("[metric]grad_scaler", self.grad_scaler.get_scale())
        self.after_backward()
        return loss_dict, losses, scaler

    def _step_is_finite(self, losses, check_grads: bool) -> bool:
        ok = torch.isfinite(losses.detach()).all()
        if check_grads:
            grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
            ok = ok & _all_finite(grads).to(ok.device)
        if comm.get_world_size() > 1:  # every process must skip the same steps
            flag = ok.to(torch.int32).reshape(1)
            flag = flag.cuda() if dist.get_backend() == "nccl" else flag.cpu()
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            ok = flag[0]
        return bool(ok)

    def _skip(self, loss_dict) -> None:
        self.skipped_nonfinite_steps += 1
        self.consecutive_nonfinite_steps += 1
        self.optimizer.zero_grad()
        bad = [k for k, v in loss_dict.items() if not torch.isfinite(v.detach()).all()]
        what = f"non-finite loss terms {bad}" if bad else "non-finite gradients (the loss is finite)"
        logger.warning(
            "Iteration %d: skipped the optimizer step: %s (%d skipped in a row, %d in total; limit %d in a row).",
            self.iter, what, self.consecutive_nonfinite_steps, self.skipped_nonfinite_steps,
            self.max_consecutive_nonfinite,
        )
        get_event_storage().put_scalar("skipped_nonfinite_steps", self.skipped_nonfinite_steps, smoothing_hint=False)
        if self.consecutive_nonfinite_steps >= self.max_consecutive_nonfinite:
            raise FloatingPointError(
                f"Training stopped at iteration {self.iter}: {self.consecutive_nonfinite_steps} consecutive optimizer "
                f"steps were skipped because the loss or the gradients were NaN/Inf (last: {what}). "
                + NONFINITE_ADVICE
            )

    def run_step(self):
        guard = self.max_consecutive_nonfinite > 0
        if not guard and not isinstance(self, AMPTrainer):
            return super().run_step()
        assert self.model.training, f"[{type(self).__name__}] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        loss_dict, losses, scaler = self._forward_backward(data)
        if guard and not self._step_is_finite(losses, check_grads=scaler is None):
            return self._skip(loss_dict)
        self.consecutive_nonfinite_steps = 0
        if self.async_write_metrics:
            self.concurrent_executor.submit(self._write_metrics, loss_dict, data_time, iter=self.iter)
        else:
            self._write_metrics(loss_dict, data_time)
        if scaler is not None:
            scale = scaler.get_scale()
            scaler.step(self.optimizer)
            scaler.update()
            if scaler.get_scale() < scale:  # the scaler found inf/NaN gradients and skipped the step
                self.skipped_nonfinite_steps += 1
        else:
            self.optimizer.step()
        get_event_storage().put_scalar("skipped_nonfinite_steps", self.skipped_nonfinite_steps, smoothing_hint=False)

    def state_dict(self):
        ret = super().state_dict()
        ret["skipped_nonfinite_steps"] = self.skipped_nonfinite_steps
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.skipped_nonfinite_steps = int(state_dict.get("skipped_nonfinite_steps", 0))


class NonFiniteGuardTrainer(_NonFiniteGuard, SimpleTrainer):
    """``SimpleTrainer`` that skips non-finite steps (module docstring)."""

    def __init__(self, *args, max_consecutive_nonfinite: int = 10, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_guard(max_consecutive_nonfinite)


def _model_device_type(model) -> str:
    """"cuda", "cpu", ... of the model's first parameter ("cpu" for a model without parameters)."""
    param = next(iter(model.parameters()), None)
    return param.device.type if param is not None else "cpu"


def amp_grad_scaler(device_type: str, precision: torch.dtype, **kwargs) -> "torch.amp.GradScaler":
    """The device-generic ``torch.amp.GradScaler`` for AMP training: enabled only for float16 on CUDA. bfloat16 has
    float32's range (no loss scaling needed), and on CPU a scaler is not used, so it is disabled there. Built
    disabled it checks nothing, hence no "GradScaler is enabled, but CUDA is not available" warning."""
    return torch.amp.GradScaler(device_type, enabled=device_type == "cuda" and precision == torch.float16, **kwargs)


class NonFiniteGuardAMPTrainer(_NonFiniteGuard, AMPTrainer):
    """``AMPTrainer`` that skips non-finite steps; the fp16 grad scaler's own skips are counted (module docstring).

    Unlike Detectron2's AMPTrainer it runs on any device: ``torch.autocast(<the model's device>)``, and, unless a
    ``grad_scaler`` is given, ``amp_grad_scaler`` (no scaler for bfloat16 or on CPU) instead of
    ``torch.cuda.amp.GradScaler()``. Setting ``precision`` rebuilds a scaler it built itself."""

    def __init__(self, model, data_loader, optimizer, *args, grad_scaler=None, precision=torch.float16,
                 max_consecutive_nonfinite: int = 10, **kwargs):
        self.device_type = _model_device_type(model)
        self._own_scaler = grad_scaler is None
        if grad_scaler is None:
            grad_scaler = amp_grad_scaler(self.device_type, precision)
        super().__init__(model, data_loader, optimizer, *args, grad_scaler=grad_scaler, precision=precision,
                         **kwargs)
        self._init_guard(max_consecutive_nonfinite)

    @property
    def precision(self) -> torch.dtype:
        return self._precision

    @precision.setter
    def precision(self, dtype: torch.dtype) -> None:
        self._precision = dtype
        if getattr(self, "_own_scaler", False) and hasattr(self, "grad_scaler"):
            self.grad_scaler = amp_grad_scaler(self.device_type, dtype)
