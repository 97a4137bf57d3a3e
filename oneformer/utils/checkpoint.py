"""``OneFormerCheckpointer``: Detectron2's checkpointer with a grouped, explained report of what was not loaded.

Typical cases it explains: fine-tuning from a checkpoint with another class count (``class_embed``,
``criterion.empty_weight``) or query count (``query_embed``): those tensors keep the model's fresh initialization;
loading a training checkpoint into an inference build: the text branch (training only) is ignored. A checkpoint that
shares no tensor with the model is refused with an error that says so.
"""
import logging
from dataclasses import dataclass, field
from typing import List, Tuple

from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import get_missing_parameters_message, get_unexpected_parameters_message

__all__ = ["OneFormerCheckpointer", "LoadReport"]

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
    """DetectionCheckpointer whose loads leave a :class:`LoadReport` in ``last_report`` and log it once."""

    def __init__(self, model, save_dir="", *, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.last_report = None
        self.logger = logging.getLogger(__name__)

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
        data = super()._load_file(filename)
        data["__source__"] = filename
        return data

    def _log_incompatible_keys(self, incompatible) -> None:
        report = self.last_report
        if report is None or report.clean:
            return
        self.logger.warning("Checkpoint load report: " + report.format())
