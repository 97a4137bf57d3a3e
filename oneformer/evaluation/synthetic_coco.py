"""A synthetic COCO instance set (ground truth + detection results) for testing and timing COCO evaluation.

Built directly as RLEs with numpy and pycocotools' encoder, so thousands of images take seconds. It exercises the
parts of COCOeval where implementations can differ: crowd regions (uncompressed RLE, as in COCO), polygon ground
truth, empty images, images with more than 100 detections (the maxDets cut), score ties, categories without ground
truth or without detections, and all three area ranges (small < 32², medium, large > 96² when the image is large
enough). Deterministic for a given seed.
"""
import numpy as np
from pycocotools import mask as mask_util

__all__ = ["coco_from_dict", "make_synthetic_coco"]


def _ellipses(h, w, params):
    """(N, H, W) bool masks of axis-aligned ellipses; params (N, 4): cx, cy, rx, ry in pixels."""
    yy = np.arange(h, dtype=np.float64)[None, :, None]
    xx = np.arange(w, dtype=np.float64)[None, None, :]
    cx, cy, rx, ry = (params[:, i, None, None] for i in range(4))
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _uncompressed_rle(mask):
    """COCO's crowd format: {"size": [h, w], "counts": [run lengths, column-major, starting with zeros]}."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0] + runs
    return {"size": list(mask.shape), "counts": runs}


def _random_shapes(rng, n, h, w):
    """(n, 4) ellipse parameters inside an h x w image, radii from 1 px to half the image."""
    cx = rng.uniform(0, w - 1, n)
    cy = rng.uniform(0, h - 1, n)
    scale = rng.uniform(0.02, 0.5, n) ** 1.5 * 2  # many small objects, some large ones
    rx = np.maximum(1.0, scale * w / 2 * rng.uniform(0.6, 1.4, n))
    ry = np.maximum(1.0, scale * h / 2 * rng.uniform(0.6, 1.4, n))
    return np.stack([cx, cy, rx, ry], axis=1)


def _encode(masks):
    """Compressed RLEs (counts as str, as Detectron2 writes them) of (N, H, W) bool masks."""
    if len(masks) == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def make_synthetic_coco(num_images=2000, *, num_categories=20, sizes=((64, 64),), large_every=0, large_size=(160, 160),
                        max_instances=100, mean_instances=4.0, crowd_prob=0.05, polygon_prob=0.1, empty_prob=0.05,
                        seed=0):
    """Ground truth and results of a synthetic instance segmentation run.

    Args:
        num_images: number of images.
        num_categories: categories 1..num_categories (the last one has no ground truth, only false positives).
        sizes: (h, w) choices for ordinary images.
        large_every: every ``large_every``-th image (0: none) is ``large_size`` and has ``max_instances`` ground-truth
            objects and more than 100 detections (exercises maxDets=100 and the large area range).
        mean_instances: Poisson mean of ground-truth objects in ordinary images (capped at ``max_instances``).
        crowd_prob / polygon_prob: share of ground-truth objects that are crowd regions (uncompressed RLE) / polygons.
        empty_prob: share of images with no ground truth (they still get some false-positive detections).

    Returns:
        (gt, results): ``gt`` a COCO instances dict (images, annotations with RLE or polygon "segmentation", "bbox",
        "area", "iscrowd"; categories); ``results`` a list of COCO result dicts with "image_id", "category_id",
        "segmentation" (compressed RLE), "bbox" (XYWH floats) and "score" (a quarter rounded to 2 decimals: ties).
    """
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in range(1, num_categories + 1)]
    gt_categories = num_categories - 1
    for img_id in range(1, num_images + 1):
        large = large_every > 0 and img_id % large_every == 0
        h, w = large_size if large else sizes[rng.integers(len(sizes))]
        images.append({"id": img_id, "height": int(h), "width": int(w), "file_name": f"{img_id:06d}.png"})
        if large:
            n_gt = max_instances
        elif rng.random() < empty_prob:
            n_gt = 0
        else:
            n_gt = int(min(max_instances, rng.poisson(mean_instances)))
        gt_params = _random_shapes(rng, n_gt, h, w)
        gt_masks = _ellipses(h, w, gt_params)
        keep = gt_masks.reshape(n_gt, h * w).any(axis=1)
        gt_params, gt_masks = gt_params[keep], gt_masks[keep]
        gt_cats = rng.integers(1, gt_categories + 1, len(gt_params))
        for m, cat, rle in zip(gt_masks, gt_cats, _encode(gt_masks)):
            ann = {"id": len(annotations) + 1, "image_id": img_id, "category_id": int(cat), "iscrowd": 0}
            u = rng.random()
            if u < crowd_prob:
                ann["iscrowd"] = 1
                ann["segmentation"] = _uncompressed_rle(m)
            elif u < crowd_prob + polygon_prob:
                ys, xs = np.nonzero(m)  # the polygon of the object's bounding quadrilateral
                x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
                ann["segmentation"] = [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1),
                                        float(x0), float(y1)]]
                rle = mask_util.merge(mask_util.frPyObjects(ann["segmentation"], h, w))
            else:
                ann["segmentation"] = rle
            enc = rle if isinstance(rle["counts"], bytes) else {"size": rle["size"], "counts": rle["counts"].encode()}
            ann["area"] = float(mask_util.area(enc))
            ann["bbox"] = [float(v) for v in mask_util.toBbox(enc)]
            annotations.append(ann)

        # detections: a perturbed copy of most ground-truth objects (sometimes with the wrong class) + false positives
        matched = rng.random(len(gt_params)) < 0.8
        dt_params = gt_params[matched].copy()
        jitter = rng.normal(0, 0.15, dt_params.shape)
        dt_params[:, 0] += jitter[:, 0] * dt_params[:, 2]
        dt_params[:, 1] += jitter[:, 1] * dt_params[:, 3]
        dt_params[:, 2:] = np.maximum(1.0, dt_params[:, 2:] * np.exp(jitter[:, 2:]))
        dt_cats = gt_cats[matched].copy()
        wrong = rng.random(len(dt_cats)) < 0.1
        dt_cats[wrong] = rng.integers(1, num_categories + 1, int(wrong.sum()))
        n_fp = 110 if large else int(rng.poisson(2.0))
        dt_params = np.concatenate([dt_params, _random_shapes(rng, n_fp, h, w)])
        dt_cats = np.concatenate([dt_cats, rng.integers(1, num_categories + 1, n_fp)])
        scores = rng.random(len(dt_params))
        tied = rng.random(len(scores)) < 0.25
        scores[tied] = np.round(scores[tied], 2)
        dt_masks = _ellipses(h, w, dt_params)
        for cat, score, rle in zip(dt_cats, scores, _encode(dt_masks)):
            enc = {"size": rle["size"], "counts": rle["counts"].encode()}
            box = mask_util.toBbox(enc) + rng.normal(0, 0.5, 4) * np.array([1, 1, 0, 0])
            results.append({"image_id": img_id, "category_id": int(cat), "segmentation": rle,
                            "bbox": [float(v) for v in box], "score": float(score)})
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, results


def coco_from_dict(dataset, coco_cls=None):
    """A pycocotools-style ``COCO`` (``coco_cls``, default pycocotools') indexed from an in-memory dict."""
    import contextlib
    import io

    if coco_cls is None:
        from pycocotools.coco import COCO as coco_cls
    with contextlib.redirect_stdout(io.StringIO()):
        coco = coco_cls()
        coco.dataset = dataset
        coco.createIndex()
    return coco
