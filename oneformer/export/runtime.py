"""Run an exported OneFormer file and get the eager model's Detectron2-format outputs.

    from oneformer.export.runtime import ExportedOneFormer

    model = ExportedOneFormer("oneformer.onnx")          # onnxruntime (CPU); a TorchScript file uses torch.jit.load
    out = model(rgb_uint8_hwc_array, task="panoptic")     # or a (3, H, W) uint8 tensor
    panoptic_seg, segments_info = out["panoptic_seg"]; sem_seg = out["sem_seg"]; instances = out["instances"]

The file's JSON description (written by :mod:`oneformer.export.exporter`) says what the graph takes and returns and
carries the MODEL.TEST settings and dataset metadata, so no config is needed. Outputs computed in the graph
(``--postprocess semantic|panoptic``) are decoded; the others enabled by MODEL.TEST.{SEMANTIC,PANOPTIC,INSTANCE}_ON
are computed from the exported logits by the eager post-processing functions (:mod:`oneformer.modeling.inference`),
with the eager model's resizing rules, at the input image size.
"""
import json
import os
import warnings
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from detectron2.modeling.postprocessing import sem_seg_postprocess
from torch.nn import functional as F

from ..modeling.inference import instance_inference, panoptic_inference, semantic_inference
from ..oneformer_model import task_string
from .exporter import METADATA_KEY

__all__ = ["ExportedOneFormer", "read_metadata"]


def _jit_load(path, map_location, extra):
    with warnings.catch_warnings():  # TorchScript files are what this loads: the deprecation note says nothing new
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)
        return torch.jit.load(path, map_location=map_location, _extra_files=extra)

ImageLike = Union[np.ndarray, torch.Tensor]


def _task_name(task: str) -> str:
    return task_string(task)[len("The task is "):]


def read_metadata(path: str) -> Dict:
    """The JSON description stored in an exported file (.onnx, else TorchScript)."""
    if os.fspath(path).endswith(".onnx"):
        import onnx

        proto = onnx.load(path, load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        if METADATA_KEY not in props:
            raise ValueError(f"{path} has no {METADATA_KEY!r} metadata: not written by tools/export_model.py")
        return json.loads(props[METADATA_KEY])
    extra = {METADATA_KEY + ".json": ""}
    _jit_load(path, "cpu", extra)
    if not extra[METADATA_KEY + ".json"]:
        raise ValueError(f"{path} has no {METADATA_KEY}.json: not written by tools/export_model.py")
    return json.loads(extra[METADATA_KEY + ".json"])


class ExportedOneFormer:
    """An exported OneFormer graph with the eager model's inputs and outputs.

    Args:
        path: a .onnx file (run with onnxruntime) or a TorchScript file (``torch.jit.load``).
        num_threads: intra-op threads (onnxruntime session option; ``torch.set_num_threads`` is left to the caller
            for TorchScript). None: the runtime's default.
        providers: onnxruntime execution providers (default CPU only).
        device: device of a TorchScript module ("cpu" default).
    """

    def __init__(self, path: str, num_threads: Optional[int] = None, providers: Optional[List[str]] = None,
                 device: str = "cpu"):
        self.path = os.fspath(path)
        self.device = torch.device(device)
        self.session = self.module = None
        if self.path.endswith(".onnx"):
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if num_threads:
                opts.intra_op_num_threads = int(num_threads)
                opts.inter_op_num_threads = 1
            self.session = ort.InferenceSession(self.path, opts, providers=providers or ["CPUExecutionProvider"])
            props = self.session.get_modelmeta().custom_metadata_map
            if METADATA_KEY not in props:
                raise ValueError(f"{path} has no {METADATA_KEY!r} metadata: not written by tools/export_model.py")
            self.meta = json.loads(props[METADATA_KEY])
        else:
            extra = {METADATA_KEY + ".json": ""}
            self.module = _jit_load(self.path, self.device, extra)
            if not extra[METADATA_KEY + ".json"]:
                raise ValueError(f"{path} has no {METADATA_KEY}.json: not written by tools/export_model.py")
            self.meta = json.loads(extra[METADATA_KEY + ".json"])

    # ------------------------------------------------------------------------------------------------------------
    @property
    def task(self) -> str:
        """The exported task ("semantic", "instance", "panoptic") or "input"."""
        return self.meta["task"]

    @property
    def postprocess(self) -> str:
        return self.meta["postprocess"]

    def task_ids(self, task: str) -> torch.Tensor:
        """(TASK_SEQ_LEN,) int64 token ids of a task, as stored at export time."""
        return torch.tensor(self.meta["task_ids"][_task_name(task)], dtype=torch.int64)

    def run(self, images: torch.Tensor, task_ids: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Run the graph: ``images`` uint8 (B, 3, H, W) in the model's input format, ``task_ids`` (B, T) int64 for a
        task-input graph. Returns the raw outputs by name (CPU tensors for onnxruntime)."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        m = self.meta
        if not m["dynamic"] and (tuple(images.shape[-2:]) != (m["height"], m["width"])
                                 or images.shape[0] != m["batch"]):
            raise ValueError(f"this graph was exported for inputs of shape ({m['batch']}, 3, {m['height']}, "
                             f"{m['width']}), got {tuple(images.shape)}; export with --dynamic for other sizes")
        inputs = [images]
        if "task_ids" in m["inputs"]:
            if task_ids is None:
                raise ValueError("this graph takes the task as input: pass task_ids")
            inputs.append(task_ids.to(torch.int64))
        if self.session is not None:
            feeds = {name: t.cpu().numpy() for name, t in zip(m["inputs"], inputs)}
            outs = [torch.from_numpy(o) for o in self.session.run(m["outputs"], feeds)]
        else:
            with torch.no_grad():
                outs = list(self.module(*[t.to(self.device) for t in inputs]))
        return dict(zip(m["outputs"], outs))

    def __call__(self, image: ImageLike, task: Optional[str] = None) -> Dict:
        """Segment one image.

        Args:
            image: RGB uint8, an (H, W, 3) array or a (3, H, W) tensor.
            task: "semantic" / "instance" / "panoptic" (or "The task is ..."); default the exported task, or
                MODEL.TEST.TASK for a task-input graph. A fixed-task graph accepts only its own task.
        Returns:
            The eager model's per-image dict: "sem_seg" (K, H, W), "panoptic_seg" (ids (H, W) int32,
            segments_info), "instances", as enabled by MODEL.TEST.*_ON at export time, plus whatever the graph's
            post-processing computes.
        """
        chw = self._to_chw(image)
        name = _task_name(task) if task is not None else (
            self.task if self.task != "input" else self.meta.get("default_task", "panoptic"))
        if self.task != "input" and name != self.task:
            raise ValueError(f"this graph was exported for task {self.task!r}, not {name!r}; export with "
                             "--task input to choose the task at run time")
        ids = self.task_ids(name)[None] if self.task == "input" else None
        outs = self.run(chw[None], ids)
        return self.postprocess_outputs({k: v[0] for k, v in outs.items()}, tuple(chw.shape[-2:]), name)

    def _to_chw(self, image: ImageLike) -> torch.Tensor:
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"an array image must be (H, W, 3) RGB, got shape {image.shape}")
            chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        elif torch.is_tensor(image):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"a tensor image must be (3, H, W) RGB, got shape {tuple(image.shape)}")
            chw = image.cpu()
        else:
            raise TypeError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}")
        if chw.dtype != torch.uint8:
            raise ValueError(f"image must be uint8, got {chw.dtype}")
        if (self.meta.get("input_format") or "RGB") == "BGR":
            chw = chw.flip(0)
        return chw.contiguous()

    # ------------------------------------------------------------------------------------------------------------
    def postprocess_outputs(self, outs: Dict[str, torch.Tensor], image_size: Tuple[int, int], task: str) -> Dict:
        """One image's graph outputs (batch dimension removed) -> the eager model's Detectron2-format dict."""
        m = self.meta
        height, width = image_size
        d = max(int(m["size_divisibility"]), 1)
        padded_size = (-(-height // d) * d, -(-width // d) * d)
        before = m["sem_seg_postprocess_before_inference"]
        mask_cls, mask_pred = outs["pred_logits"], outs["pred_masks"]

        def resize(masks):  # OneFormer.inference's resize, for an output of the input size
            if masks.shape[0] == 0:
                return masks.new_zeros((0,) + ((height, width) if before else padded_size))
            masks = F.interpolate(masks[None], size=padded_size, mode="bilinear", align_corners=False)[0]
            if before:
                if tuple(image_size) == tuple(padded_size):
                    return masks
                masks = sem_seg_postprocess(masks, image_size, height, width)
            return masks

        res = {}
        if "sem_seg" in outs:
            res["sem_seg"] = outs["sem_seg"]
        elif m["semantic_on"]:
            r = semantic_inference(mask_cls, resize(mask_pred))
            if not before:
                r = sem_seg_postprocess(r, image_size, height, width)
            res["sem_seg"] = r
        if "panoptic_seg" in outs:
            res["panoptic_seg"] = self._decode_panoptic(outs)
        elif m["panoptic_on"]:
            res["panoptic_seg"] = panoptic_inference(mask_cls, mask_pred, resize, self._thing_ids(),
                                                     m["object_mask_threshold"], m["overlap_threshold"],
                                                     rule=m.get("panoptic_rule", "original"))
        if m["instance_on"]:
            remap = None
            if "ade20k" in (m.get("dataset") or "") and not m["is_demo"] and task == "instance":
                remap = m["thing_dataset_ids"]  # ADE20K instance evaluation uses the 100-class thing space
            inst = instance_inference(
                mask_cls, mask_pred, resize, (height, width), m["test_topk_per_image"],
                thing_ids=self._thing_ids() if m["panoptic_on"] else None,
                object_mask_threshold=m["object_mask_threshold"] if m["is_demo"] else None,
                label_remap=remap, detection_on=m["detection_on"],
            )
            res["instances"] = inst
            if m["detection_on"]:
                res["box_instances"] = inst
        return res

    def _thing_ids(self) -> List[int]:
        ids = self.meta.get("thing_ids")
        if ids is None:
            raise RuntimeError(f"the exported model's dataset {self.meta.get('dataset')!r} had no thing classes in "
                               "its metadata, which panoptic and instance post-processing need")
        return ids

    @staticmethod
    def _decode_panoptic(outs: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, List[Dict]]:
        n = int(outs["num_segments"])
        categories = outs["segments_category"][:n].tolist()
        things = outs["segments_isthing"][:n].tolist()
        info = [{"id": i + 1, "isthing": bool(t), "category_id": int(c)} for i, (c, t) in
                enumerate(zip(categories, things))]
        return outs["panoptic_seg"].to(torch.int32), info
