"""Run an exported OneFormer file and get the eager model's Detectron2-format outputs.

    from oneformer.export.runtime import ExportedOneFormer

    model = ExportedOneFormer("oneformer.onnx")   # .onnx: onnxruntime; .pt2: ExportedProgram or AOTInductor package;
                                                  # TorchScript: torch.jit.load (the format is in the file)
    out = model("photo.jpg", task="panoptic")      # or an RGB array (H, W[, C]) / tensor, as the predictor takes
    panoptic_seg, segments_info = out["panoptic_seg"]; sem_seg = out["sem_seg"]; instances = out["instances"]

Inputs are prepared as :class:`oneformer.predictor.OneFormerPredictor` prepares them: files read as RGB (EXIF
orientation applied), grayscale / RGBA / 16-bit / float [0, 1] arrays converted, the config's test resize
(INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, stored at export time) applied, and the outputs returned at the original size.

The file's JSON description (written by :mod:`oneformer.export.exporter`) says what the graph takes and returns and
carries the MODEL.TEST settings and dataset metadata, so no config is needed. Outputs computed in the graph
(``--postprocess semantic|panoptic``) are decoded; the others enabled by MODEL.TEST.{SEMANTIC,PANOPTIC,INSTANCE}_ON
are computed from the exported logits by the eager post-processing functions (:mod:`oneformer.modeling.inference`),
with the eager model's resizing rules, at the input image size.
"""
import json
import os
import warnings
import zipfile
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling.postprocessing import sem_seg_postprocess
from torch.nn import functional as F

from ..modeling.inference import InferenceThresholds, instance_inference, panoptic_inference, semantic_inference
from ..oneformer_model import task_string
from ..utils.image_io import load_input_image
from .exporter import METADATA_KEY

__all__ = ["ExportedOneFormer", "read_metadata"]

MASK_STRIDE = 4  # pred_masks are at 1/4 of the graph's input


def _jit_load(path, map_location, extra):
    with warnings.catch_warnings():  # TorchScript files are what this loads: the deprecation note says nothing new
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated")  # any category (torch 2.11)
        return torch.jit.load(path, map_location=map_location, _extra_files=extra)

ImageLike = Union[str, os.PathLike, np.ndarray, torch.Tensor]


def _task_name(task: str) -> str:
    return task_string(task)[len("The task is "):]


def _zip_metadata(path: str) -> Optional[Dict]:
    """The description stored in a zip archive (ExportedProgram / AOTInductor package / TorchScript), else None."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist()
                 if n == METADATA_KEY + ".json" or n.endswith("/extra/" + METADATA_KEY + ".json")]
        return json.loads(archive.read(names[0])) if names else None


def read_metadata(path: str) -> Dict:
    """The JSON description stored in an exported file (.onnx, else a .pt2 or TorchScript archive)."""
    path = os.fspath(path)
    if path.endswith(".onnx"):
        import onnx

        proto = onnx.load(path, load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        if METADATA_KEY not in props:
            raise ValueError(f"{path} has no {METADATA_KEY!r} metadata: not written by tools/export_model.py")
        return json.loads(props[METADATA_KEY])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exported model {path!r} does not exist")
    meta = _zip_metadata(path)
    if meta is None:
        raise ValueError(f"{path} has no {METADATA_KEY}.json: not written by tools/export_model.py")
    return meta


class ExportedOneFormer:
    """An exported OneFormer graph with the eager model's inputs and outputs.

    Args:
        path: a .onnx file (run with onnxruntime), a .pt2 ExportedProgram (``torch.export.load``) or AOTInductor
            package (``torch._inductor.aoti_load_package``), or a TorchScript file (``torch.jit.load``); the format
            is read from the file's description.
        num_threads: intra-op threads (onnxruntime session option; ``torch.set_num_threads`` is left to the caller
            for the torch formats). None: the runtime's default.
        providers: onnxruntime execution providers (default CPU only).
        device: device of a torch-format model ("cpu" default; an AOTInductor package runs where it was compiled).
        resize: apply the config's test resize (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST) as the predictor does, when the
            file records it (exports of tools/export_model.py do); False feeds images at their own size.
        confidence_threshold: as ``OneFormerPredictor``'s (same default, same rules: :class:`InferenceThresholds`
            with the exported MODEL.TEST thresholds): instances scored below it are dropped, and it raises the
            object-mask threshold of panoptic queries and instances.
    """

    def __init__(self, path: str, num_threads: Optional[int] = None, providers: Optional[List[str]] = None,
                 device: str = "cpu", resize: bool = True, confidence_threshold: Optional[float] = None):
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
            self.meta = read_metadata(self.path)
            fmt = self.meta.get("format", "torchscript")
            if fmt == "pt2":
                from .. import ops  # noqa: F401  (registers oneformer::ms_deform_attn, which the program calls)

                self.module = torch.export.load(self.path).module().to(self.device)
            elif fmt == "aoti":
                from torch._inductor import aoti_load_package

                from .. import ops  # noqa: F401

                self.module = aoti_load_package(self.path)
            else:
                self.module = _jit_load(self.path, self.device, {METADATA_KEY + ".json": ""})
        size = self.meta.get("resize")
        self.aug = T.ResizeShortestEdge([size[0], size[0]], size[1]) if resize and size else None
        self.thresholds = InferenceThresholds.create(self.meta["object_mask_threshold"],
                                                     self.meta["overlap_threshold"], confidence_threshold)
        self._canvas_of = {}  # (blocks high, blocks wide) -> the canvas chosen for it

    # ------------------------------------------------------------------------------------------------------------
    @property
    def task(self) -> str:
        """The exported task ("semantic", "instance", "panoptic") or "input"."""
        return self.meta["task"]

    @property
    def postprocess(self) -> str:
        return self.meta["postprocess"]

    @property
    def padded_input(self) -> bool:
        """Whether the graph takes images padded to multiples of ``meta["block"]`` plus their sizes (the
        torch.export-based formats), which :meth:`run` prepares."""
        return bool(self.meta.get("padded_input", False))

    def task_ids(self, task: str) -> torch.Tensor:
        """(TASK_SEQ_LEN,) int64 token ids of a task, as stored at export time."""
        return torch.tensor(self.meta["task_ids"][_task_name(task)], dtype=torch.int64)

    def canvas(self, height: int, width: int) -> Tuple[int, int]:
        """The (Hp, Wp) the graph is given for an image of height x width (after the test resize): the image's size
        rounded up to multiples of the block (32) when the graph takes that, else the smallest canvas it takes that
        holds the image (a static graph's size; for a dynamic one, from the map of canvases probed at export time),
        into which the image is zero-padded; the graph takes the image's own size as an input. ValueError (one line,
        naming the sizes) when no canvas holds the image."""
        m = self.meta
        if not self.padded_input:
            if not m["dynamic"] and (height, width) != (m["height"], m["width"]):
                raise ValueError(f"this graph was exported for images of {m['height']}x{m['width']} pixels, got "
                                 f"{height}x{width}; export with --dynamic for other sizes")
            return height, width
        d = int(m["block"])
        hb, wb = -(-height // d), -(-width // d)
        if not m["dynamic"]:
            if height > m["height"] or width > m["width"]:
                raise ValueError(f"the image is {height}x{width} pixels{self._resize_words()}, larger than this "
                                 f"graph's static {m['height']}x{m['width']} canvas; export with --dynamic, or with "
                                 "a larger --height/--width")
            return m["height"], m["width"]
        rows = m.get("canvases")
        if rows is None:  # a file written before the map existed: the graph's guards decide
            return hb * d, wb * d
        if (hb, wb) in self._canvas_of:  # one search per padded size (photos share a few)
            return self._canvas_of[hb, wb]
        n = len(rows)
        fits = [(i * j, i, j) for i in range(hb, n + 1) for j in range(wb, n + 1) if rows[i - 1][j - 1] == "1"]
        if not fits:
            taken = [(i, j) for i in range(1, n + 1) for j in range(1, n + 1) if rows[i - 1][j - 1] == "1"]
            largest = max(taken, key=lambda t: t[0] * t[1]) if taken else (0, 0)
            raise ValueError(f"the image is {height}x{width} pixels{self._resize_words()}: this graph takes canvases "
                             f"up to {largest[0] * d}x{largest[1] * d} (exported at example size "
                             f"{'x'.join(map(str, m.get('example', ['?', '?'])))}); export again with --height "
                             f"{height} --width {width}")
        _, i, j = min(fits)
        self._canvas_of[hb, wb] = (i * d, j * d)
        return i * d, j * d

    def _resize_words(self) -> str:
        size = self.meta.get("resize")
        return f" after the test resize ({size[0]}, at most {size[1]} a side)" if self.aug is not None else ""

    def run(self, images: torch.Tensor, task_ids: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Run the graph: ``images`` a uint8 tensor (B, 3, H, W) in the model's input format, ``task_ids`` (B, T)
        int64 for a task-input graph. Images are zero-padded into the canvas :meth:`canvas` chooses. Returns the raw
        outputs by name (CPU tensors for onnxruntime); ``pred_masks`` covers that canvas at 1/4 resolution, as the
        eager model's covers its padded batch."""
        if not isinstance(images, torch.Tensor):
            shape = getattr(images, "shape", None)
            raise ValueError(f"run() takes a uint8 torch.Tensor (B, 3, H, W), got {type(images).__module__}."
                             f"{type(images).__name__}{'' if shape is None else ' of shape ' + str(tuple(shape))}: "
                             "wrap an array with torch.from_numpy, or call the model itself (model(image)) with a "
                             "file, an H×W×C array or a tensor")
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a uint8 tensor (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        m = self.meta
        B, _, H, W = images.shape
        if m.get("batch") is not None and B != m["batch"]:
            raise ValueError(f"this graph was exported for batches of {m['batch']} images, got {B}; export with "
                             "--batch for another batch size")
        hp, wp = self.canvas(H, W)
        inputs = [images]
        if self.padded_input:  # the graph zeroes the padding after normalization
            if (hp, wp) != (H, W):
                inputs[0] = images.new_zeros((B, 3, hp, wp))
                inputs[0][:, :, :H, :W] = images
            inputs.append(torch.tensor([[H, W]] * B, dtype=torch.int64))
        if "task_ids" in m["inputs"]:
            if task_ids is None:
                raise ValueError("this graph takes the task as input: pass task_ids")
            inputs.append(task_ids.to(torch.int64))
        if self.session is not None:
            feeds = {name: t.cpu().numpy() for name, t in zip(m["inputs"], inputs)}
            outs = [torch.from_numpy(o) for o in self.session.run(m["outputs"], feeds)]
        else:
            try:
                with torch.no_grad():
                    outs = [o.cpu() for o in self.module(*[t.to(self.device) for t in inputs])]
            except (AssertionError, RuntimeError) as e:  # torch.export's shape checks (a file without the map)
                if not any(k in str(e) for k in ("Guard failed", "Expected input at")):
                    raise
                raise ValueError(f"this graph cannot take a {hp}x{wp} canvas (it is specialized to sizes like its "
                                 f"export example's); export again with --height {H} --width {W}") from None
        return dict(zip(m["outputs"], outs))

    def __call__(self, image: ImageLike, task: Optional[str] = None) -> Dict:
        """Segment one image.

        Args:
            image: a file path, an RGB array (H, W) / (H, W, 1|3|4) (uint8, uint16, bool or float in [0, 1] or
                [0, 255]) or a tensor (H, W, C) / (C, H, W), as :class:`~oneformer.predictor.OneFormerPredictor`
                takes them.
            task: "semantic" / "instance" / "panoptic" (or "The task is ..."); default the exported task, or
                MODEL.TEST.TASK for a task-input graph. A fixed-task graph accepts only its own task.
        Returns:
            The eager model's per-image dict at the image's size: "sem_seg" (K, H, W), "panoptic_seg" (ids (H, W)
            int32, segments_info), "instances", as enabled by MODEL.TEST.*_ON at export time.
        """
        name = _task_name(task) if task is not None else (
            self.task if self.task != "input" else self.meta.get("default_task", "panoptic"))
        if self.task != "input" and name != self.task:
            raise ValueError(f"this graph was exported for task {self.task!r}, not {name!r}; export with "
                             "--task input to choose the task at run time")
        hwc = self.load_image(image)
        height, width = hwc.shape[:2]
        if self.aug is not None:
            hwc = self.aug.get_transform(hwc).apply_image(hwc)
        chw = torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))
        ids = self.task_ids(name)[None] if self.task == "input" else None
        outs = self.run(chw[None], ids)
        result = self.postprocess_outputs({k: v[0] for k, v in outs.items()}, tuple(chw.shape[-2:]), name,
                                          output_size=(height, width))
        return self.thresholds.filter(result)

    def load_image(self, image: ImageLike, name: str = "image") -> np.ndarray:
        """An input as an (H, W, 3) uint8 array in the graph's channel order (INPUT.FORMAT)."""
        return load_input_image(image, self.meta.get("input_format") or "RGB", "RGB", name)

    # ------------------------------------------------------------------------------------------------------------
    def postprocess_outputs(self, outs: Dict[str, torch.Tensor], image_size: Tuple[int, int], task: str,
                            output_size: Optional[Tuple[int, int]] = None) -> Dict:
        """One image's graph outputs (batch dimension removed) -> the eager model's Detectron2-format dict.

        ``image_size``: the (H, W) the graph was given; ``output_size``: the size to return (the eager model's
        "height"/"width"; default ``image_size``). In-graph post-processing outputs are used when the two agree."""
        m = self.meta
        height, width = output_size or image_size
        d = max(int(m["size_divisibility"]), 1)
        padded_size = (-(-image_size[0] // d) * d, -(-image_size[1] // d) * d)
        mask_cls, mask_pred = outs["pred_logits"], outs["pred_masks"]
        if self.padded_input:  # the masks cover the canvas the image was padded into (as a padded batch's do)
            padded_size = (MASK_STRIDE * mask_pred.shape[-2], MASK_STRIDE * mask_pred.shape[-1])
        before = m["sem_seg_postprocess_before_inference"]
        t = self.thresholds
        in_graph = tuple(image_size) == (height, width)

        def resize(masks):  # OneFormer.inference's resize
            if masks.shape[0] == 0:
                return masks.new_zeros((0,) + ((height, width) if before else padded_size))
            masks = F.interpolate(masks[None], size=padded_size, mode="bilinear", align_corners=False)[0]
            if before:
                if tuple(image_size) == tuple(padded_size) == (height, width):
                    return masks
                masks = sem_seg_postprocess(masks, image_size, height, width)
            return masks

        res = {}
        if "sem_seg" in outs and in_graph:
            res["sem_seg"] = outs["sem_seg"]
        elif m["semantic_on"]:
            r = semantic_inference(mask_cls, resize(mask_pred))
            if not before:
                r = sem_seg_postprocess(r, image_size, height, width)
            res["sem_seg"] = r
        if "panoptic_seg" in outs and in_graph:
            res["panoptic_seg"] = self._decode_panoptic(outs)
        elif m["panoptic_on"]:
            res["panoptic_seg"] = panoptic_inference(mask_cls, mask_pred, resize, self._thing_ids(), t.object_mask,
                                                     t.overlap, rule=m.get("panoptic_rule", "original"))
        if m["instance_on"]:
            # the predictor's (demo) rule: instances above the object-mask threshold, labels in the model's space
            inst = instance_inference(
                mask_cls, mask_pred, resize, (height, width), m["test_topk_per_image"],
                thing_ids=self._thing_ids() if m["panoptic_on"] else None,
                object_mask_threshold=t.object_mask, detection_on=m["detection_on"],
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
