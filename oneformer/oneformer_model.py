"""``OneFormer``: the meta-architecture (META_ARCH_REGISTRY "OneFormer").

Input: a list of dicts with "image" (C, H, W) uint8 (or float 0..255; a float image in [0, 1] is refused) in
cfg.INPUT.FORMAT, optional "height"/"width" (output size),
"task" ("The task is panoptic" or just "panoptic"; default MODEL.TEST.TASK), and for training "instances"
(gt_classes, gt_masks) and "text" (list of N − N_CTX strings). At test time "task" may be "all": each output from its
own task token in one pass (panoptic_seg from the panoptic token, instances from the instance token, sem_seg and
sem_seg_probs from the semantic token; the backbone and pixel decoder run once, the transformer decoder once per
token; ``_forward_all_tasks``).
Output (eval): one dict per image with "sem_seg" (K, H, W) scores, "panoptic_seg" (ids (H, W) int32,
segments_info) and "instances", as enabled by MODEL.TEST.{SEMANTIC,PANOPTIC,INSTANCE}_ON; an input may instead name
the ones it wants in "outputs" (a subset of OUTPUTS + EXTRAS), e.g. only what its task needs. EXTRAS add:
"embeddings": "query_embeddings" (N, C), the decoder's final (normalized) query embeddings, from which the class
and mask heads predict, plus instances.pred_embeddings (M, C) / pred_query_ids (M,), and "panoptic_embeddings"
(S, C) aligned with segments_info (each entry also gets "query_ids" and "score", its best query's class probability;
a merged stuff segment's embedding is the mean of its queries'); "sem_seg_probs": (K, H, W) per-pixel class
probabilities (the semantic scores normalized per pixel).
An input's "sliding_window" (bool, default MODEL.TEST.SLIDING_WINDOW.ENABLED) runs it by overlapping windows
(``sliding_window_inference``).
Training: a dict of weighted losses.
"""
import contextlib
import logging
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, ImageList
from detectron2.utils.memory import retry_if_cuda_oom
from torch import nn
from torch.nn import functional as F

from .data.tokenizer import TASK_ALL, TASKS, Tokenize, get_default_tokenizer, is_task_all, task_string
from .modeling.activation_checkpoint import apply_activation_checkpointing
from .modeling.compile import CompiledNetwork
from .modeling.cpu_linear import CPU_LINEAR_BACKENDS, use_onednn_linear
from .modeling.criterion import SetCriterion, build_weight_dict
from .modeling.inference import (PANOPTIC_RULES, instance_inference, panoptic_inference, semantic_inference,
                                 semantic_probabilities)
from .modeling.matcher import HungarianMatcher
from .modeling.sliding_window import (MASK_STRIDE, SlidingWindow, WindowQueries, merge_window_queries,
                                      sliding_window_from_cfg, window_boxes)
from .modeling.transformer_decoder.mlp import MLP
from .modeling.transformer_decoder.text_transformer import TextTransformer
from .utils.tracing import is_tracing

__all__ = ["OneFormer", "TASKS", "TASK_ALL", "OUTPUTS", "EXTRAS", "TASK_OUTPUTS", "task_string"]

OUTPUTS = ("sem_seg", "panoptic_seg", "instances")
# optional additions to the outputs an input asks for (see the module docstring)
EXTRAS = ("embeddings", "sem_seg_probs")
# task "all": which task token computes which output (and extra)
TASK_OUTPUTS = {"panoptic": ("panoptic_seg",), "instance": ("instances",), "semantic": ("sem_seg", "sem_seg_probs")}
# marks the per-token inputs made from a task-"all" input (their instances stay in the model's label space)
_FROM_TASK_ALL = "_from_task_all"

logger = logging.getLogger(__name__)


def _check_pixel_range(img: torch.Tensor, i: int) -> None:
    """Raise ValueError for a float image in [0, 1]: normalized with 0..255 statistics it would be a black image.
    Integral values (a [0, 255] image that happens to be dark, e.g. all zero) pass. Skipped under tracing and
    torch.compile (a data-dependent check)."""
    if not img.is_floating_point() or img.numel() == 0 or is_tracing() or torch.compiler.is_compiling():
        return
    high = float(img.max())
    if high <= 1.0 and bool((img != img.round()).any()):
        raise ValueError(f"batched_inputs[{i}]['image'] is a float image with values in [0, 1] (max {high:.3g}); the "
                         "model takes pixel values 0..255 (uint8, or float 0..255) in INPUT.FORMAT order: multiply "
                         "it by 255")


@META_ARCH_REGISTRY.register()
class OneFormer(nn.Module):
    """Backbone → OneFormerHead (pixel decoder, task-conditioned transformer decoder) → mask classification."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        task_mlp: nn.Module,
        text_encoder: Optional[nn.Module],
        text_projector: Optional[nn.Module],
        criterion: nn.Module,
        prompt_ctx: Optional[nn.Embedding],
        num_queries: int,
        object_mask_threshold: float,
        overlap_threshold: float,
        metadata,
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: Tuple[float],
        pixel_std: Tuple[float],
        semantic_on: bool,
        panoptic_on: bool,
        instance_on: bool,
        detection_on: bool,
        test_topk_per_image: int,
        task_seq_len: int,
        max_seq_len: int,
        is_demo: bool,
        default_task: str = "panoptic",
        cpu_linear_backend: str = "onednn",
        panoptic_rule: str = "original",
        compile_backend: Optional[str] = None,
        compile_mode: Optional[str] = None,
        compile_freeze: bool = False,
        sliding_window: Optional[SlidingWindow] = None,
        sliding_window_on: bool = False,
    ):
        """compile_backend: None runs the network eagerly; else the ``torch.compile`` backend it runs with
        (MODEL.COMPILE, MODEL.COMPILE_BACKEND, MODEL.COMPILE_MODE, MODEL.COMPILE_FREEZE; see
        oneformer/modeling/compile.py)."""
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.task_mlp = task_mlp
        self.text_encoder = text_encoder
        self.text_projector = text_projector
        self.prompt_ctx = prompt_ctx
        self.criterion = criterion
        self.num_queries = num_queries
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        if panoptic_rule not in PANOPTIC_RULES:
            raise ValueError(f"MODEL.TEST.PANOPTIC_RULE must be one of {PANOPTIC_RULES}, got {panoptic_rule!r}")
        self.panoptic_rule = panoptic_rule
        self.sliding_window = sliding_window
        self.sliding_window_on = sliding_window_on
        if sliding_window_on and sliding_window is None:
            raise ValueError("MODEL.TEST.SLIDING_WINDOW.ENABLED needs window settings (SIZE, STRIDE)")
        self.metadata = metadata
        self._warned_semantic_only = False
        if size_divisibility < 0:
            size_divisibility = self.backbone.size_divisibility
        self.size_divisibility = size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        # not persistent: checkpoints never carry them (as in the original)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.semantic_on = semantic_on
        self.instance_on = instance_on
        self.panoptic_on = panoptic_on
        # The original keeps only thing classes among instances whenever PANOPTIC_ON is set (all shipped configs):
        # a property of the model, independent of which outputs a call asks for.
        self.instances_things_only = panoptic_on
        self.detection_on = detection_on
        self.test_topk_per_image = test_topk_per_image
        self.is_demo = is_demo
        self.default_task = TASK_ALL if is_task_all(default_task) else task_string(default_task)
        self.task_tokenizer = Tokenize(get_default_tokenizer(), max_seq_len=task_seq_len)
        self.text_tokenizer = Tokenize(get_default_tokenizer(), max_seq_len=max_seq_len)
        self._task_ids: Dict[str, torch.Tensor] = {}
        if cpu_linear_backend not in CPU_LINEAR_BACKENDS:
            raise ValueError(
                f"MODEL.CPU_LINEAR_BACKEND must be one of {CPU_LINEAR_BACKENDS}, got {cpu_linear_backend!r}")
        if cpu_linear_backend == "onednn":
            use_onednn_linear(self)
        # a plain attribute, not a submodule: the state_dict keeps the original's keys
        self.compiled = CompiledNetwork(self._network, compile_backend, compile_mode, freeze=compile_freeze,
                                        module=self) if compile_backend else None

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        apply_activation_checkpointing(backbone, sem_seg_head, cfg)  # MODEL.*ACTIVATION_CHECKPOINT, off by default
        of = cfg.MODEL.ONE_FORMER
        te = cfg.MODEL.TEXT_ENCODER
        if cfg.INPUT.TASK_SEQ_LEN <= 0:
            raise ValueError(f"INPUT.TASK_SEQ_LEN must be positive, got {cfg.INPUT.TASK_SEQ_LEN}")
        text_encoder = text_projector = prompt_ctx = None
        if cfg.MODEL.IS_TRAIN:
            if te.CONTEXT_LENGTH != cfg.INPUT.MAX_SEQ_LEN:
                raise ValueError(
                    f"MODEL.TEXT_ENCODER.CONTEXT_LENGTH ({te.CONTEXT_LENGTH}) must equal INPUT.MAX_SEQ_LEN "
                    f"({cfg.INPUT.MAX_SEQ_LEN}): the positional embedding covers the whole token sequence"
                )
            if te.N_CTX > 0 and te.WIDTH != of.HIDDEN_DIM:
                raise ValueError(
                    f"MODEL.TEXT_ENCODER.WIDTH ({te.WIDTH}) must equal MODEL.ONE_FORMER.HIDDEN_DIM ({of.HIDDEN_DIM}) "
                    "when N_CTX > 0: the prompt context vectors are appended to the projected text embeddings"
                )
            text_encoder = TextTransformer(context_length=te.CONTEXT_LENGTH, width=te.WIDTH, layers=te.NUM_LAYERS,
                                           vocab_size=te.VOCAB_SIZE)
            text_projector = MLP(text_encoder.width, of.HIDDEN_DIM, of.HIDDEN_DIM, te.PROJ_NUM_LAYERS)
            if te.N_CTX > 0:
                prompt_ctx = nn.Embedding(te.N_CTX, te.WIDTH)
        task_mlp = MLP(cfg.INPUT.TASK_SEQ_LEN, of.HIDDEN_DIM, of.HIDDEN_DIM, 2)

        matcher = HungarianMatcher(cost_class=of.CLASS_WEIGHT, cost_mask=of.MASK_WEIGHT, cost_dice=of.DICE_WEIGHT,
                                   num_points=of.TRAIN_NUM_POINTS)
        weight_dict = build_weight_dict(of.CLASS_WEIGHT, of.MASK_WEIGHT, of.DICE_WEIGHT, of.CONTRASTIVE_WEIGHT,
                                        of.DEC_LAYERS, of.DEEP_SUPERVISION)
        criterion = SetCriterion(
            sem_seg_head.num_classes, matcher=matcher, weight_dict=weight_dict, eos_coef=of.NO_OBJECT_WEIGHT,
            losses=["labels", "masks", "contrastive"], num_points=of.TRAIN_NUM_POINTS,
            oversample_ratio=of.OVERSAMPLE_RATIO, importance_sample_ratio=of.IMPORTANCE_SAMPLE_RATIO,
            contrast_temperature=of.CONTRASTIVE_TEMPERATURE,
        )
        test = cfg.MODEL.TEST
        dataset = cfg.DATASETS.TRAIN[0] if len(cfg.DATASETS.TRAIN) else "__oneformer_no_dataset__"
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "task_mlp": task_mlp,
            "text_encoder": text_encoder,
            "text_projector": text_projector,
            "prompt_ctx": prompt_ctx,
            "criterion": criterion,
            "num_queries": of.NUM_OBJECT_QUERIES,
            "object_mask_threshold": test.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": test.OVERLAP_THRESHOLD,
            "metadata": MetadataCatalog.get(dataset),
            "size_divisibility": of.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                test.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or test.PANOPTIC_ON or test.INSTANCE_ON
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": test.SEMANTIC_ON,
            "instance_on": test.INSTANCE_ON,
            "panoptic_on": test.PANOPTIC_ON,
            "detection_on": test.DETECTION_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "task_seq_len": cfg.INPUT.TASK_SEQ_LEN,
            "max_seq_len": cfg.INPUT.MAX_SEQ_LEN,
            "is_demo": cfg.MODEL.IS_DEMO,
            "default_task": test.TASK,
            "cpu_linear_backend": cfg.MODEL.CPU_LINEAR_BACKEND,
            "panoptic_rule": test.PANOPTIC_RULE,
            "compile_backend": cfg.MODEL.COMPILE_BACKEND if cfg.MODEL.COMPILE else None,
            "compile_mode": cfg.MODEL.COMPILE_MODE,
            "compile_freeze": cfg.MODEL.COMPILE_FREEZE,
            "sliding_window": sliding_window_from_cfg(cfg),
            "sliding_window_on": test.SLIDING_WINDOW.ENABLED,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ----------------------------------------------------------------------------------------------------------
    # inputs

    def task_token_ids(self, task: str) -> torch.Tensor:
        """(TASK_SEQ_LEN,) int64 CLIP token ids of a task string (validated, cached)."""
        key = task_string(task)
        if key not in self._task_ids:
            self._task_ids[key] = self.task_tokenizer(key)
        return self._task_ids[key]

    def encode_tasks(self, batched_inputs: List[Dict]) -> torch.Tensor:
        """(B, HIDDEN_DIM): the task MLP applied to the raw token ids (as floats, no embedding; spec §3)."""
        ids = torch.stack([self.task_token_ids(x.get("task", self.default_task)) for x in batched_inputs])
        return self.task_mlp(ids.to(device=self.device, dtype=self.task_mlp.layers[0].weight.dtype))

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        images = []
        for i, x in enumerate(batched_inputs):
            if "image" not in x:
                raise KeyError(f"batched_inputs[{i}] has no 'image' (keys: {sorted(x)})")
            img = x["image"]
            if not torch.is_tensor(img) or img.dim() != 3 or img.shape[0] != self.pixel_mean.shape[0]:
                raise ValueError(
                    f"batched_inputs[{i}]['image'] must be a ({self.pixel_mean.shape[0]}, H, W) tensor, got "
                    + (f"shape {tuple(img.shape)}" if torch.is_tensor(img) else type(img).__name__)
                )
            _check_pixel_range(img, i)
            images.append((img.to(self.device) - self.pixel_mean) / self.pixel_std)
        return ImageList.from_tensors(images, self.size_divisibility)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """text: (B, T, L) token ids → (B, T + N_CTX, C): encoded, projected, plus the learned context vectors."""
        b, t, _ = text.shape
        x = self.text_projector(self.text_encoder(text.flatten(0, 1))).view(b, t, -1)
        if self.prompt_ctx is not None:
            x = torch.cat([x, self.prompt_ctx.weight.unsqueeze(0).expand(b, -1, -1)], dim=1)
        return x

    # ----------------------------------------------------------------------------------------------------------

    def forward(self, batched_inputs: List[Dict]):
        if self.training:
            self._check_training_inputs(batched_inputs)
        elif any(x.get("sliding_window", self.sliding_window_on) for x in batched_inputs):
            return self._forward_sliding(batched_inputs)
        elif any(is_task_all(x.get("task", self.default_task)) for x in batched_inputs):
            return self._forward_all_tasks(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        tasks = self.encode_tasks(batched_inputs)
        if not self.training and any("embeddings" in x.get("outputs", ()) for x in batched_inputs):
            # eagerly (also with MODEL.COMPILE): the hook reads the decoder's queries
            with self._capture_query_embeddings(True) as captured:
                outputs = self._network(images.tensor, tasks)
            outputs["query_embeddings"] = captured[-1]
        else:  # the plain call: no hook, nothing for tracing or compilation to see
            outputs = self.network(images.tensor, tasks)
        if self.training:
            return self.losses(batched_inputs, images, outputs)
        return self.inference(batched_inputs, images, outputs)

    def network(self, images: torch.Tensor, tasks: torch.Tensor) -> Dict:
        """(B, 3, H, W) normalized, padded images and (B, HIDDEN_DIM) task embeddings -> the head's outputs:
        "pred_logits" (B, N, K + 1), "pred_masks" (B, N, H / 4, W / 4) (training adds the auxiliary outputs and the
        query embeddings for the contrastive loss). Compiled when MODEL.COMPILE is set."""
        if self.compiled is not None and not torch.compiler.is_compiling():
            return self.compiled(images, tasks, training=self.training)
        return self._network(images, tasks)

    def _network(self, images: torch.Tensor, tasks: torch.Tensor) -> Dict:
        return self.sem_seg_head(self.backbone(images), tasks)

    @contextlib.contextmanager
    def _capture_query_embeddings(self, enabled: bool = True):
        """Collect the transformer decoder's final query embeddings (B, N, C) while enabled.

        They are the output of the decoder's ``decoder_norm`` on its last call in a forward pass (the class and mask
        heads read exactly that), taken with a forward hook so the decoder and its traced graph stay unchanged.
        Yields a list that receives one (B, N, C) tensor per call; the last is the final one.
        """
        captured: List[torch.Tensor] = []
        if not enabled:
            yield captured
            return
        norm = getattr(getattr(self.sem_seg_head, "predictor", None), "decoder_norm", None)
        if norm is None:
            raise RuntimeError("query embeddings need a transformer decoder (sem_seg_head.predictor) with a "
                               "decoder_norm; this model's head has none")
        # (N, B, C) queries; the task token's (1, B, C) normalization comes first and is superseded
        handle = norm.register_forward_hook(lambda module, args, out: captured.append(out.transpose(0, 1)))
        try:
            yield captured
        finally:
            handle.remove()

    def _check_training_inputs(self, batched_inputs: List[Dict]) -> None:
        needed = ["instances"] + (["text"] if self.text_encoder is not None else [])
        for i, x in enumerate(batched_inputs):
            missing = [k for k in needed if k not in x]
            if missing:
                raise KeyError(f"training input {i} lacks {missing} (use a OneFormer training dataset mapper, "
                               "which derives them from the panoptic annotation)")

    def losses(self, batched_inputs, images, outputs) -> Dict[str, torch.Tensor]:
        targets = self.prepare_targets([x["instances"].to(self.device) for x in batched_inputs], images)
        if self.text_encoder is not None:
            texts = torch.stack([self.text_tokenizer(x["text"]) for x in batched_inputs]).to(self.device)
            outputs["texts"] = self.encode_text(texts)
        losses = self.criterion(outputs, targets)
        weights = self.criterion.weight_dict
        return {k: v * weights[k] for k, v in losses.items() if k in weights}

    @staticmethod
    def prepare_targets(targets, images: ImageList) -> List[Dict[str, torch.Tensor]]:
        """Ground truth as {"labels" (M,), "masks" (M, H_pad, W_pad)} zero-padded to the batch size."""
        h_pad, w_pad = images.tensor.shape[-2:]
        new_targets = []
        for t in targets:
            gt_masks = t.gt_masks.tensor if isinstance(t.gt_masks, BitMasks) else t.gt_masks
            padded = gt_masks.new_zeros((gt_masks.shape[0], h_pad, w_pad))
            padded[:, : gt_masks.shape[1], : gt_masks.shape[2]] = gt_masks
            new_targets.append({"labels": t.gt_classes, "masks": padded})
        return new_targets

    # ----------------------------------------------------------------------------------------------------------
    # inference

    def _has_things(self) -> bool:
        return getattr(self.metadata, "thing_dataset_id_to_contiguous_id", None) is not None

    def _thing_ids(self) -> List[int]:
        if not self._has_things():
            name = self.metadata.name
            if name in DatasetCatalog.list() and getattr(self.metadata, "stuff_classes", None) is not None:
                raise RuntimeError(
                    f"dataset {name!r} (DATASETS.TRAIN[0], whose classes the model uses) has no thing classes "
                    "(thing_dataset_id_to_contiguous_id): it is a semantic-only dataset, so panoptic and instance "
                    "outputs cannot be computed; ask for semantic segmentation only (task semantic, "
                    "MODEL.TEST.PANOPTIC_ON False, MODEL.TEST.INSTANCE_ON False) or set DATASETS.TRAIN to a panoptic "
                    "dataset"
                )
            raise RuntimeError(
                f"metadata of dataset {name!r} has no thing_dataset_id_to_contiguous_id, which "
                "panoptic and instance inference need to tell things from stuff: register the dataset "
                "(import oneformer.data.datasets) or set DATASETS.TRAIN to a registered dataset"
            )
        return list(self.metadata.thing_dataset_id_to_contiguous_id.values())

    def _default_outputs(self) -> set:
        """The outputs of MODEL.TEST.*_ON; without thing classes (semantic-only data) only "sem_seg", said once."""
        wanted = {k for k, on in (("sem_seg", self.semantic_on), ("panoptic_seg", self.panoptic_on),
                                  ("instances", self.instance_on)) if on}
        if wanted - {"sem_seg"} and not self._has_things() and getattr(self.metadata, "stuff_classes", None):
            if not self._warned_semantic_only:
                self._warned_semantic_only = True
                logger.warning("Dataset %s has no thing classes (a semantic-only dataset): only semantic "
                               "segmentation is computed (MODEL.TEST.PANOPTIC_ON False and INSTANCE_ON False say so "
                               "without this warning).", self.metadata.name)
            wanted &= {"sem_seg"}
        return wanted

    def _wanted(self, batched_inputs: List[Dict]):
        """Per input, the set of outputs (and extras) to compute; the thing class ids when any needs them."""
        wanted = []
        for i, x in enumerate(batched_inputs):
            if "outputs" in x:
                unknown = set(x["outputs"]) - set(OUTPUTS) - set(EXTRAS)
                if unknown:
                    raise ValueError(f"batched_inputs[{i}]['outputs'] has unknown entries {sorted(unknown)}; "
                                     f"choose from {OUTPUTS + EXTRAS}")
                wanted.append(set(x["outputs"]))
            else:
                wanted.append(self._default_outputs())
        needs_things = any(w & {"panoptic_seg", "instances"} for w in wanted)
        return wanted, (self._thing_ids() if needs_things else None)

    def _instance_remap(self, x: Dict) -> Optional[List[int]]:
        task = task_string(x.get("task", self.default_task))
        if x.get(_FROM_TASK_ALL):
            return None  # task "all" evaluates a panoptic dataset, whose instance evaluators take the model's ids
        if "ade20k" in (self.metadata.name or "") and not self.is_demo and "instance" in task:
            # ADE20K instance evaluation uses the 100-class thing space
            return list(self.metadata.thing_dataset_id_to_contiguous_id.keys())
        return None

    def inference(self, batched_inputs, images: ImageList, outputs) -> List[Dict]:
        mask_cls_results = outputs["pred_logits"]
        mask_pred_results = outputs["pred_masks"]
        padded_size = images.tensor.shape[-2:]
        wanted, thing_ids = self._wanted(batched_inputs)
        processed_results = []
        embeddings = outputs.get("query_embeddings")
        if embeddings is None:
            embeddings = [None] * len(batched_inputs)
        for mask_cls, mask_pred, x, image_size, want, emb in zip(mask_cls_results, mask_pred_results, batched_inputs,
                                                                  images.image_sizes, wanted, embeddings):
            height = x.get("height", image_size[0])
            width = x.get("width", image_size[1])
            before = self.sem_seg_postprocess_before_inference

            def resize(masks, image_size=image_size, height=height, width=width, before=before):
                # as the original: to the padded input size, then crop and resize to the requested output size
                if masks.shape[0] == 0:  # nothing kept: interpolate rejects empty inputs
                    return masks.new_zeros((0,) + ((height, width) if before else tuple(padded_size)))
                masks = F.interpolate(masks[None], size=padded_size, mode="bilinear", align_corners=False)[0]
                if before:
                    if tuple(image_size) == tuple(padded_size) == (height, width):
                        return masks  # the crop and the same-size resize would return it unchanged
                    masks = retry_if_cuda_oom(sem_seg_postprocess)(masks, image_size, height, width)
                return masks

            if not before or tuple(image_size) == tuple(padded_size) == (height, width):
                resize.bilinear_size = tuple(padded_size)  # it is one bilinear resize (see modeling.inference)
            res = {}
            with_emb = "embeddings" in want
            if "sem_seg" in want or "sem_seg_probs" in want:
                r = retry_if_cuda_oom(semantic_inference)(mask_cls, resize(mask_pred))
                if not before:
                    r = retry_if_cuda_oom(sem_seg_postprocess)(r, image_size, height, width)
                if "sem_seg_probs" in want:
                    res["sem_seg_probs"] = semantic_probabilities(r)
                if "sem_seg" in want:
                    res["sem_seg"] = r
            if with_emb:
                res["query_embeddings"] = emb
            if "panoptic_seg" in want:
                pan = retry_if_cuda_oom(panoptic_inference)(
                    mask_cls, mask_pred, resize, thing_ids, self.object_mask_threshold, self.overlap_threshold,
                    rule=self.panoptic_rule, return_queries=with_emb,
                )
                if with_emb:
                    pan, queries = pan[:2], pan[2]
                    for info, q in zip(pan[1], queries):
                        info["query_ids"] = q
                    res["panoptic_embeddings"] = (torch.stack([emb[q].mean(0) for q in queries]) if queries
                                                  else emb.new_zeros((0, emb.shape[-1])))
                res["panoptic_seg"] = pan
            if "instances" in want:
                remap = self._instance_remap(x)
                inst = retry_if_cuda_oom(instance_inference)(
                    mask_cls, mask_pred, resize, (height, width), self.test_topk_per_image,
                    thing_ids=thing_ids if self.instances_things_only else None,
                    object_mask_threshold=self.object_mask_threshold if self.is_demo else None,
                    label_remap=remap, detection_on=self.detection_on, return_query_ids=with_emb,
                )
                if with_emb:
                    inst.pred_embeddings = emb[inst.pred_query_ids]
                res["instances"] = inst
                if self.detection_on:
                    res["box_instances"] = inst
            processed_results.append(res)
        return processed_results

    # ----------------------------------------------------------------------------------------------------------
    # sliding-window inference (oneformer/modeling/sliding_window.py)

    def _forward_sliding(self, batched_inputs: List[Dict]) -> List[Dict]:
        """Inputs with "sliding_window" (default MODEL.TEST.SLIDING_WINDOW.ENABLED) one at a time by windows, the
        others as a whole-image batch; results in input order."""
        if self.sliding_window is None:
            raise ValueError("sliding-window inference needs MODEL.TEST.SLIDING_WINDOW settings")
        if self.panoptic_rule != "original":
            raise ValueError(f"sliding-window inference supports MODEL.TEST.PANOPTIC_RULE 'original' only, got "
                             f"{self.panoptic_rule!r}")
        wanted, thing_ids = self._wanted(batched_inputs)
        slide = [bool(x.get("sliding_window", self.sliding_window_on)) for x in batched_inputs]
        results: List[Optional[Dict]] = [None] * len(batched_inputs)
        whole = [i for i, s in enumerate(slide) if not s]
        if whole:
            for i, r in zip(whole, self.forward([dict(batched_inputs[i], sliding_window=False) for i in whole])):
                results[i] = r
        for i, (x, want) in enumerate(zip(batched_inputs, wanted)):
            if not slide[i]:
                continue
            if is_task_all(x.get("task", self.default_task)):  # by windows: one whole run per task token
                results[i] = {}
                for task, outs in self._task_plan(x, want, i).items():
                    results[i].update(self.sliding_window_inference(dict(x, task=task, **{_FROM_TASK_ALL: True}), outs,
                                                                            thing_ids))
            else:
                results[i] = self.sliding_window_inference(x, want, thing_ids)
        return results

    # ----------------------------------------------------------------------------------------------------------
    # task "all": every output from its own task token, one backbone and pixel-decoder pass

    def _task_plan(self, x: Dict, want: set, i: int) -> Dict[str, set]:
        """{task name: outputs to compute with that token} for input ``i`` (wanting ``want``)."""
        task = x.get("task", self.default_task)
        if not is_task_all(task):
            return {task_string(task)[len("The task is "):]: want}
        if "embeddings" in want:
            raise ValueError(f"batched_inputs[{i}] asks for 'embeddings' with task 'all': query embeddings belong to "
                             "one task token; ask for them with a single task")
        plan = {t: want & set(outs) for t, outs in TASK_OUTPUTS.items()}
        return {t: outs for t, outs in plan.items() if outs}

    def _forward_all_tasks(self, batched_inputs: List[Dict]) -> List[Dict]:
        """A batch in which some inputs have task "all" (the others one task each).

        The backbone and the pixel decoder run once on the whole batch; the task-conditioned transformer decoder then
        runs once per task token on the inputs that need it (all of them for task "all"), and each token's outputs
        are post-processed into its own results: panoptic_seg from the panoptic token, instances from the instance
        token, sem_seg / sem_seg_probs from the semantic token (``TASK_OUTPUTS``). The decoder sees the same features
        as in a single-token run, so each output equals that run's. Runs eagerly (MODEL.COMPILE compiles the
        single-token network).
        """
        images = self.preprocess_image(batched_inputs)
        wanted, _ = self._wanted(batched_inputs)
        plans = [self._task_plan(x, want, i) for i, (x, want) in enumerate(zip(batched_inputs, wanted))]
        encoded = self.sem_seg_head.encode(self.backbone(images.tensor))
        results: List[Dict] = [{} for _ in batched_inputs]
        for task in TASK_OUTPUTS:
            idx = [i for i, plan in enumerate(plans) if task in plan]
            if not idx:
                continue
            sub = [dict(batched_inputs[i], task=task, outputs=tuple(sorted(plans[i][task])),
                        **{_FROM_TASK_ALL: is_task_all(batched_inputs[i].get("task", self.default_task))})
                   for i in idx]
            if len(idx) == len(batched_inputs):  # the usual case: no copies, the very tensors of a single-token run
                sub_encoded, sub_images = encoded, images
            else:
                rows = torch.as_tensor(idx, device=images.tensor.device)
                sub_encoded = (encoded[0][rows], [f[rows] for f in encoded[1]])
                sub_images = ImageList(images.tensor[rows], [images.image_sizes[i] for i in idx])
            with_emb = any("embeddings" in plans[i][task] for i in idx)
            with self._capture_query_embeddings(with_emb) as captured:
                outputs = self.sem_seg_head.decode(sub_encoded, self.encode_tasks(sub))
            if with_emb:
                outputs["query_embeddings"] = captured[-1]
            for i, res in zip(idx, self.inference(sub, sub_images, outputs)):
                results[i].update(res)
        return results

    def _run_window(self, x: Dict, crop: torch.Tensor, with_emb: bool):
        """One window through the network: (K+1) class logits (N, K+1), mask logits (N, P/4, Q/4) on the window
        padded to (P, Q), the padded size, and the query embeddings (N, C) or None."""
        xi = {"image": crop, "task": x.get("task", self.default_task)}
        images = self.preprocess_image([xi])
        tasks = self.encode_tasks([xi])
        emb = None
        if with_emb:
            with self._capture_query_embeddings(True) as captured:
                outputs = self._network(images.tensor, tasks)
            emb = captured[-1][0]
        else:  # all windows have one size: with MODEL.COMPILE one graph serves them
            outputs = self.network(images.tensor, tasks)
        return outputs["pred_logits"][0], outputs["pred_masks"][0], images.tensor.shape[-2:], emb

    def sliding_window_inference(self, x: Dict, want: set, thing_ids: Optional[List[int]]) -> Dict:
        """One image by overlapping windows of MODEL.TEST.SLIDING_WINDOW.SIZE, each run with the input's task token.

        Args:
            x: an input dict ("image" (C, H, W) at the resolution the windows are cut from, optional "height"/"width",
                "task").
            want: outputs and extras to compute (OUTPUTS, EXTRAS); thing_ids: as for whole-image inference.
        Returns:
            the whole-image formats: "sem_seg" (K, height, width) averaged window scores; "panoptic_seg" and
            "instances" from the windows' queries merged across windows (``merge_window_queries``) and then the
            whole-image rules; with "embeddings", panoptic_embeddings / instances.pred_embeddings are the merged
            queries' mean embeddings (no "query_embeddings": windows have their own queries).
        """
        img = x["image"]
        if not torch.is_tensor(img) or img.dim() != 3:
            raise ValueError("sliding-window input 'image' must be a (C, H, W) tensor, got "
                             + (f"shape {tuple(img.shape)}" if torch.is_tensor(img) else type(img).__name__))
        H, W = img.shape[-2:]
        height, width = x.get("height", H), x.get("width", W)
        with_emb = "embeddings" in want
        semantic = bool(want & {"sem_seg", "sem_seg_probs"})
        pools = {k: [] for k in ("panoptic_seg", "instances") if k in want}
        sem = count = None
        for y0, x0, h, w in window_boxes(H, W, self.sliding_window):
            crop = img[:, y0:y0 + h, x0:x0 + w]
            ch, cw = crop.shape[-2:]
            mask_cls, mask_pred, padded, emb = self._run_window(x, crop, with_emb and bool(pools))
            if semantic:
                masks = F.interpolate(mask_pred[None], size=padded, mode="bilinear", align_corners=False)[0]
                r = semantic_inference(mask_cls, masks[:, :ch, :cw])
                del masks
                if sem is None:
                    sem = r.new_zeros((r.shape[0], H, W))
                    count = r.new_zeros((H, W))
                sem[:, y0:y0 + ch, x0:x0 + cw] += r
                count[y0:y0 + ch, x0:x0 + cw] += 1
            grid = mask_pred[:, : h // MASK_STRIDE, : w // MASK_STRIDE]
            box = (y0 // MASK_STRIDE, x0 // MASK_STRIDE, h // MASK_STRIDE, w // MASK_STRIDE)
            probs = F.softmax(mask_cls, dim=-1)
            if "panoptic_seg" in pools:  # the panoptic rule's kept queries
                scores, labels = probs.max(-1)
                keep = (labels != probs.shape[-1] - 1) & (scores > self.object_mask_threshold)
                pools["panoptic_seg"].append(WindowQueries(box, mask_cls[keep], grid[keep].clone(), labels[keep],
                                                           emb[keep] if emb is not None else None))
            if "instances" in pools:  # the queries of the instance rule's top-k (query, class) pairs
                things = probs[:, :-1]
                k = min(self.test_topk_per_image, things.numel())
                keep = torch.unique(things.flatten().topk(k, sorted=False).indices // things.shape[1])
                pools["instances"].append(WindowQueries(box, mask_cls[keep], grid[keep].clone(),
                                                        things[keep].argmax(-1),
                                                        emb[keep] if emb is not None else None))
            del mask_pred, grid
        res = {}
        if semantic:
            sem /= count
            if (height, width) != (H, W):
                sem = F.interpolate(sem[None], size=(height, width), mode="bilinear", align_corners=False)[0]
            if "sem_seg_probs" in want:
                res["sem_seg_probs"] = semantic_probabilities(sem)
            if "sem_seg" in want:
                res["sem_seg"] = sem
        merge_iou = self.sliding_window.merge_iou
        if "panoptic_seg" in pools:
            merged = merge_window_queries(pools.pop("panoptic_seg"), merge_iou)
            pan = panoptic_inference(merged.logits, merged.ids(), merged.resizer((H, W), (height, width)), thing_ids,
                                     self.object_mask_threshold, self.overlap_threshold, rule=self.panoptic_rule,
                                     return_queries=with_emb)
            if with_emb:
                pan, queries = pan[:2], pan[2]
                for info, q in zip(pan[1], queries):
                    info["query_ids"] = q
                res["panoptic_embeddings"] = (torch.stack([merged.embeddings[q].mean(0) for q in queries])
                                              if queries else merged.embeddings.new_zeros(
                                                  (0, merged.embeddings.shape[-1])))
            res["panoptic_seg"] = pan
        if "instances" in pools:
            merged = merge_window_queries(pools.pop("instances"), merge_iou)
            inst = instance_inference(
                merged.logits, merged.ids(), merged.resizer((H, W), (height, width)), (height, width),
                self.test_topk_per_image, thing_ids=thing_ids if self.instances_things_only else None,
                object_mask_threshold=self.object_mask_threshold if self.is_demo else None,
                label_remap=self._instance_remap(x), detection_on=self.detection_on, return_query_ids=with_emb,
            )
            if with_emb:
                inst.pred_embeddings = merged.embeddings[inst.pred_query_ids]
            res["instances"] = inst
            if self.detection_on:
                res["box_instances"] = inst
        return res
