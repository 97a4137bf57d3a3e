"""Config keys of ``train_net.py`` (training loop, logging, gradient clipping, non-finite steps) and of checkpoint
loading, added by ``add_oneformer_config_all``. None of them exists in the original release; their defaults keep the
original behaviour except where noted.

``add_oneformer_engine_config(cfg)`` adds:

- ``WANDB.ENABLED`` (False): log training metrics to Weights & Biases (needs ``pip install wandb``). The original
  always logged to W&B; here it is opt-in. ``WANDB.PROJECT`` / ``WANDB.NAME`` (original keys) name the project and
  run; a ``None`` name becomes the config file's base name.
- ``SOLVER.AMP.PRECISION`` ("float16"): autocast dtype when ``SOLVER.AMP.ENABLED``; "bfloat16" is also accepted
  (no loss scaling is used then). The original always used float16.
- ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE`` (a Detectron2 key) accepts two more values besides Detectron2's per-parameter
  "value" and "norm":

  * "full_model": replace NaN/Inf gradients by finite values (NaN -> 0, +-Inf -> +-1e5), then clip the global norm
    (``NORM_TYPE``) over ALL parameters to ``CLIP_VALUE``. This is what the shipped YAMLs ask for and it really
    clips (the original did not, see below).
  * "nan_to_num": only the NaN/Inf replacement, no clipping at all. This is the original release's EFFECTIVE
    behaviour (its clipping call received an exhausted iterator and did nothing), i.e. what the released checkpoints
    were trained with: set ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE nan_to_num`` to reproduce them.

  ``ENABLED`` False disables every kind, as in Detectron2.
- ``SOLVER.MAX_CONSECUTIVE_NONFINITE`` (10): every training step checks the loss and (without an fp16 grad scaler)
  the gradients; when one is NaN/Inf the optimizer step is skipped, a warning names the iteration and the offending
  losses, and the metric ``skipped_nonfinite_steps`` (the running count, in metrics.json/TensorBoard) goes up. Steps
  that fp16 AMP's GradScaler skips because of gradient overflow are counted there too. After this many skips in a row
  (caused by non-finite losses/gradients; the grad scaler's own calibration skips do not count) training stops with
  FloatingPointError listing what to try: a lower SOLVER.BASE_LR, gradient clipping, AMP off or bfloat16, checking
  the data. 0 disables the check (Detectron2's behaviour: a non-finite loss raises at once, gradients go to the
  optimizer unchanged — e.g. to reproduce the original with CLIP_TYPE "nan_to_num").
- ``MODEL.ALLOW_UNSAFE_PICKLE`` (False): checkpoints are read with ``torch.load(weights_only=True)`` and Detectron2
  ``.pkl`` files with an unpickler that only builds containers, numbers, strings and numpy arrays; a file needing
  anything else is refused. True allows full pickle loading (ONLY for files you trust: unpickling can run arbitrary
  code). Read by train_net (training, --resume, --eval-only), ``OneFormerPredictor``, the demo
  (``--allow-unsafe-pickle``) and the tools that load checkpoints (``oneformer/utils/checkpoint.py``).
- ``TEST.BEST_CHECKPOINT``: keep the best weights of the periodic evaluation (``best_checkpoint.py``):

  * ``ENABLED`` (False): after each evaluation (TEST.EVAL_PERIOD, which must be > 0, and after the last iteration)
    save ``OUTPUT_DIR/model_best.pth`` when ``METRIC`` improved;
  * ``METRIC`` (""): "PQ", "AP", "mIoU" or another result of the evaluators ("PQ_th", "AP50", "fwIoU", ...), or a
    full key such as "sem_seg/mIoU"; "" = the metric of the task token the evaluation runs with (MODEL.TEST.TASK:
    panoptic PQ, instance AP, semantic mIoU);
  * ``MODE`` ("max"): "max" or "min";
  * ``PATIENCE`` (0): stop training after this many evaluations in a row without a gain (0: never).
- ``TEST.EVALUATOR_QUEUE`` (2): train_net's evaluators run their per-batch ``process`` work (RLE encoding, PNG
  writing, confusion matrices) in a worker thread while the model runs the next batch, at most this many batches
  behind (``oneformer/evaluation/async_evaluator.py``); 0 runs it in the loop, as Detectron2 does. Same results.
- ``DATASETS.TRAIN_SAMPLING_WEIGHTS`` (()) and ``DATASETS.TRAIN_TASK_PROBS`` (()): per-dataset sampling weights and
  (semantic, instance, panoptic) task probabilities for DATASETS.TRAIN entries of different kinds (panoptic,
  semantic-only, instance-only); see ``oneformer/data/mixed_datasets.py``.
- ``MODEL.BACKBONE.ACTIVATION_CHECKPOINT`` (False) and ``MODEL.SEM_SEG_HEAD.ENCODER_ACTIVATION_CHECKPOINT`` (False):
  recompute the activations of every backbone block / pixel-decoder encoder layer in the backward pass instead of
  storing them (less training memory, more compute); see ``oneformer/modeling/activation_checkpoint.py``.
- ``EXTRA_HOOKS`` ([]): extra training hooks, each "package.module:factory" where ``factory(trainer)`` returns a
  Detectron2 ``HookBase``, a list of them or None. They run after Detectron2's default hooks and before the metric
  writers (so scalars they put into the event storage are written). Used by the tests to observe the distributed
  contrastive loss; useful for any custom logging without editing ``train_net.py``.
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_oneformer_engine_config", "CLIP_TYPES", "AMP_PRECISIONS"]

CLIP_TYPES = ("value", "norm", "full_model", "nan_to_num")
AMP_PRECISIONS = ("float16", "bfloat16")


def add_oneformer_engine_config(cfg):
    """Add the train_net keys described in the module docstring (those not present yet, so calling it twice is
    harmless); returns ``cfg``. Works after ``add_oneformer_config_all`` or alone (it then creates ``WANDB``)."""
    if "WANDB" not in cfg:
        cfg.WANDB = CN()
        cfg.WANDB.PROJECT = "OneFormer"
        cfg.WANDB.NAME = None
    defaults = (
        (cfg.WANDB, "ENABLED", False),
        (cfg.SOLVER.AMP, "PRECISION", "float16"),
        (cfg.SOLVER, "MAX_CONSECUTIVE_NONFINITE", 10),
        (cfg.MODEL, "ALLOW_UNSAFE_PICKLE", False),
        (cfg, "EXTRA_HOOKS", []),
        (cfg.MODEL.BACKBONE, "ACTIVATION_CHECKPOINT", False),
        (cfg.MODEL.SEM_SEG_HEAD, "ENCODER_ACTIVATION_CHECKPOINT", False),
        (cfg.DATASETS, "TRAIN_SAMPLING_WEIGHTS", ()),
        (cfg.DATASETS, "TRAIN_TASK_PROBS", ()),
    )
    defaults += ((cfg.TEST, "EVALUATOR_QUEUE", 2),)
    if "BEST_CHECKPOINT" not in cfg.TEST:
        cfg.TEST.BEST_CHECKPOINT = CN()
    defaults += (
        (cfg.TEST.BEST_CHECKPOINT, "ENABLED", False),
        (cfg.TEST.BEST_CHECKPOINT, "METRIC", ""),
        (cfg.TEST.BEST_CHECKPOINT, "MODE", "max"),
        (cfg.TEST.BEST_CHECKPOINT, "PATIENCE", 0),
    )
    for node, key, value in defaults:
        if key not in node:
            node[key] = value
    return cfg
