"""``OneFormerPredictor``: images (arrays or paths) and a task in, Detectron2-format outputs out, in batches.

    from oneformer.predictor import OneFormerPredictor
    predictor = OneFormerPredictor.from_config_file("configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml",
                                                    weights="https://.../250_16_swin_l_oneformer_ade20k_160k.pth")
    outputs = predictor(["a.jpg", rgb_array], task="panoptic")   # [{"panoptic_seg": (ids, segments_info)}, ...]

The same thresholds as the demo: the config's MODEL.TEST thresholds, demo mode (MODEL.IS_DEMO: instances above
the object-mask threshold), and an optional confidence threshold that drops instances scored below it and panoptic
queries whose class probability is below it.
"""
import os
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from .config import add_oneformer_config_all, merge_config
from .modeling.inference import InferenceThresholds
from .oneformer_model import TASKS
from .utils.checkpoint import OneFormerCheckpointer
from .utils.device import check_device, choose_device
from .utils.image_io import (  # noqa: F401  (read_image: re-exported)
    ImageReadError,
    image_size,
    load_input_image,
    read_image,
)

__all__ = ["OneFormerPredictor", "ImageReadError", "ImageTooLargeError", "TASK_OUTPUTS", "DEFAULT_MAX_PIXELS"]

# demo.py's default pixel cap: every camera photo (a 36 MP one peaked at 6 GB in demo.py) but not a 100 MP scan
DEFAULT_MAX_PIXELS = 40_000_000


class ImageTooLargeError(ImageReadError):
    """An input has more pixels than the predictor's ``max_pixels``."""

# what each task produces; "all" runs the three tasks, each with its own task token
TASK_OUTPUTS = {"panoptic": "panoptic_seg", "semantic": "sem_seg", "instance": "instances"}

ImageLike = Union[str, os.PathLike, np.ndarray, torch.Tensor]


class OneFormerPredictor:
    """Batched inference with a OneFormer model built from ``cfg``.

    Args:
        cfg: a Detectron2 config with the OneFormer keys (MODEL.WEIGHTS: a path or URL; empty keeps random weights;
            MODEL.DEVICE: a device this machine has, else ``DeviceError``).
        confidence_threshold: optional; instances scored below it are dropped, and it is used as the panoptic
            object-mask threshold when higher than the config's.
        batch_size: images per forward pass.
        input_format: channel order of array inputs ("RGB" or "BGR"); files are read as RGB.
        compile: run the network through ``torch.compile`` (sets MODEL.COMPILE; MODEL.COMPILE_BACKEND chooses the
            backend, MODEL.COMPILE_FREEZE True freezes the weights for fixed-size serving). The first call of a size
            bucket compiles (seconds to minutes), later ones reuse the graph.
        sliding_window: run images by overlapping windows (MODEL.TEST.SLIDING_WINDOW; None: its ENABLED). Images are
            then not resized to INPUT.MIN_SIZE_TEST: the windows are cut from the image at its own resolution.
        max_pixels: optional cap on an input's height × width: a larger image raises ``ImageTooLargeError`` (an
            ``ImageReadError``: callers that skip unreadable inputs skip it) before anything of its size is
            allocated, since the outputs come at the input's full resolution (sem_seg alone is K × H × W floats).
    """

    def __init__(self, cfg: CfgNode, confidence_threshold: Optional[float] = None, batch_size: int = 1,
                 input_format: str = "RGB", compile: bool = False, sliding_window: Optional[bool] = None,
                 max_pixels: Optional[int] = None):
        cfg = cfg.clone()
        cfg.defrost()
        if compile:
            cfg.MODEL.COMPILE = True
        if sliding_window is not None:
            cfg.MODEL.TEST.SLIDING_WINDOW.ENABLED = bool(sliding_window)
        cfg.MODEL.IS_TRAIN = False
        cfg.MODEL.IS_DEMO = True
        # the export runtime applies the same (InferenceThresholds), so both keep the same segments and instances
        self.thresholds = InferenceThresholds.create(cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD,
                                                     cfg.MODEL.TEST.OVERLAP_THRESHOLD, confidence_threshold)
        cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD = self.thresholds.object_mask
        cfg.freeze()
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be 'RGB' or 'BGR', got {input_format!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_pixels is not None and max_pixels < 1:
            raise ValueError(f"max_pixels must be positive (or None for no cap), got {max_pixels}")
        self.max_pixels = max_pixels
        check_device(cfg.MODEL.DEVICE, "use device='cpu' (demo/demo.py --device cpu, or MODEL.DEVICE cpu)")
        self.cfg = cfg
        self.confidence_threshold = confidence_threshold
        self.batch_size = batch_size
        self.input_format = input_format
        self.model = build_model(cfg).eval()
        # MODEL.ALLOW_UNSAFE_PICKLE: full pickle loading only on request (oneformer/utils/checkpoint.py)
        self.checkpointer = OneFormerCheckpointer(
            self.model, allow_unsafe_pickle=bool(cfg.MODEL.get("ALLOW_UNSAFE_PICKLE", False)))
        if cfg.MODEL.WEIGHTS:
            self.checkpointer.load(cfg.MODEL.WEIGHTS)
        # the classes the model's post-processing uses (DATASETS.TRAIN[0]), so pictures and files agree with it
        self.metadata = self.model.metadata
        self.sliding_window = bool(cfg.MODEL.TEST.SLIDING_WINDOW.ENABLED)
        # sliding windows exist to keep the full resolution: no test resize then
        self.aug = None if self.sliding_window else T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)

    @classmethod
    def from_config_file(cls, config_file: str, weights: Optional[str] = None, opts: Sequence[str] = (),
                         device: Optional[str] = None, **kwargs) -> "OneFormerPredictor":
        """Build from a YAML file, a checkpoint (path or URL; default: the config's MODEL.WEIGHTS) and KEY VALUE
        overrides. The device is ``device``, else MODEL.DEVICE of ``opts``, else cuda when available, else cpu (not
        the file's MODEL.DEVICE: a dumped training config carries its machine's); a CUDA device that is not there
        raises ``oneformer.utils.device.DeviceError``. An unknown key raises
        ``oneformer.config.ConfigError`` naming it, where it came from and the closest existing keys."""
        cfg = merge_config(add_oneformer_config_all(get_cfg()), config_file, opts)
        if weights is not None:
            cfg.MODEL.WEIGHTS = weights
        cfg.MODEL.DEVICE = choose_device(device, opts)
        return cls(cfg, **kwargs)

    def load_image(self, image: ImageLike, name: str = "image") -> np.ndarray:
        """An input as an H×W×3 uint8 array in the model's INPUT.FORMAT (``ImageTooLargeError`` above
        ``max_pixels``)."""
        if self.max_pixels is not None and isinstance(image, (str, os.PathLike)):  # before decoding it
            self.check_size(image_size(image), os.fspath(image))
        array = load_input_image(image, self.cfg.INPUT.FORMAT, self.input_format, name)
        self.check_size(array.shape[:2], name)
        return array

    def check_size(self, size, name: str = "image") -> None:
        """ImageTooLargeError when an image of ``size`` (H, W) has more pixels than ``max_pixels``."""
        h, w = size
        if self.max_pixels is not None and h * w > self.max_pixels:
            raise ImageTooLargeError(
                f"{name}: {w}×{h} pixels ({h * w / 1e6:.1f} MP) is more than the pixel cap ({self.max_pixels:,}): "
                "the outputs come at full resolution and would not fit in memory; raise the cap with --max-pixels "
                "(max_pixels=None: none), or downscale the image; --sliding-window keeps its detail at the model's "
                "resolution")

    def _inputs(self, image: np.ndarray, task: str, outputs) -> Dict:
        height, width = image.shape[:2]
        resized = image if self.aug is None else self.aug.get_transform(image).apply_image(image)
        # uint8, as Detectron2's dataset mappers give it: the model normalizes to float itself, and a full-resolution
        # float copy (sliding windows) would take 4 bytes a channel for nothing
        tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width, "task": f"The task is {task}",
                "outputs": outputs}

    @torch.no_grad()
    def __call__(self, images: Union[ImageLike, Iterable[ImageLike]], task: str = "panoptic",
                 all_outputs: bool = False, embeddings: bool = False, probabilities: bool = False) -> List[Dict]:
        """Run the model.

        Args:
            images: one image or a list (file paths, H×W×C arrays, or tensors (H×W×C or C×H×W)).
            task: "panoptic", "semantic" or "instance" (the task token; only that task's output is computed unless
                ``all_outputs``).
            all_outputs: compute sem_seg, panoptic_seg and instances with this task token.
            embeddings: add the decoder's query embeddings (C = MODEL.ONE_FORMER.HIDDEN_DIM): "query_embeddings"
                (N, C) for all queries, instances.pred_embeddings (M, C) and pred_query_ids (M,) row-aligned with the
                instances, "panoptic_embeddings" (S, C) row-aligned with segments_info (whose entries get
                "query_ids" and "score"). With sliding windows: the merged queries' mean embeddings, no
                "query_embeddings".
            probabilities: add "sem_seg_probs" (K, H, W), per-pixel class probabilities (summing to 1 per pixel).
        Returns:
            one dict per image, Detectron2's formats: "sem_seg" (K, H, W), "panoptic_seg" (ids (H, W),
            segments_info), "instances" (Instances with pred_masks, scores, pred_classes), plus the extras asked for.
        """
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}: expected one of {TASKS}")
        single = isinstance(images, (str, os.PathLike, np.ndarray, torch.Tensor))
        items = [images] if single else list(images)
        outputs = ("sem_seg", "panoptic_seg", "instances") if all_outputs else (TASK_OUTPUTS[task],)
        outputs += (("embeddings",) if embeddings else ()) + (("sem_seg_probs",) if probabilities else ())
        results = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            batch = [self._inputs(self.load_image(img, f"images[{start + i}]"), task, outputs)
                     for i, img in enumerate(chunk)]
            results.extend(self.thresholds.filter(r) for r in self.model(batch))
        return results
