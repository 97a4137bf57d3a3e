"""Reading images for inference and training: clear errors that name the file, and conversions instead of rejections.

``read_image(path, fmt)`` returns an H×W×3 uint8 array in "RGB" or "BGR" order with the EXIF orientation applied:
grayscale is repeated to three channels, the alpha channel of RGBA/LA files is dropped, and 16-bit images keep their
most significant byte (``value >> 8``) instead of being clipped to 255. A missing, empty (0 bytes), truncated or
undecodable file raises :class:`ImageReadError` whose message starts with the path and says which of these it is.

``to_uint8_hwc(array, name)`` applies the same conversions to an array (uint8/uint16/float/bool, H×W or H×W×C);
float arrays whose values all lie in [0, 1] are taken as [0, 1] images and scaled by 255 (other floats must lie in
[0, 255]), and a C×H×W array is refused with an error that says H×W×C is expected.
``read_label_image(path, what, record)`` reads a label PNG (semantic ids, RGB panoptic ids) as Detectron2 does, with
the same error reporting. Used by ``OneFormerPredictor``, the demo and every dataset mapper.
"""
import os
from typing import Optional, Union

import numpy as np
from detectron2.data import detection_utils as utils

__all__ = ["ImageReadError", "read_image", "read_label_image", "to_uint8_hwc", "load_input_image", "image_size"]


class ImageReadError(ValueError):
    """An input image could not be read or understood; the message names the file and the problem."""


def to_uint8_hwc(image: np.ndarray, name: str) -> np.ndarray:
    """An H×W×3 uint8 copy of ``image`` (H×W or H×W×C; uint8, uint16, float or bool): grayscale, RGBA and 16-bit
    images become 8-bit, 3-channel, floats in [0, 1] are scaled to 0..255; anything else raises ImageReadError
    naming ``name``, the problem and the expected form."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ImageReadError(f"{name}: expected an H×W×C image, got shape {image.shape}")
    if image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
        raise ImageReadError(f"{name}: expected an H×W×C image (channels last), got shape {image.shape}, which looks "
                             "like C×H×W: pass image.transpose(1, 2, 0)")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    elif image.shape[2] != 3:
        raise ImageReadError(f"{name}: expected 1, 3 or 4 channels, got {image.shape[2]}")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        low, high = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
            raise ImageReadError(f"{name}: float image values must lie in [0, 1] or [0, 255], got "
                                 f"{low:.4g}..{high:.4g}")
        if high <= 1.0:  # a [0, 1] image (rounding it as 0..255 would make it black)
            image = image * 255.0
        image = image.round().astype(np.uint8)
    elif image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        raise ImageReadError(f"{name}: unsupported dtype {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageReadError(f"{name}: the image is empty ({image.shape[0]}×{image.shape[1]})")
    return np.ascontiguousarray(image)


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")


def image_size(path: Union[str, os.PathLike]) -> tuple:
    """(H, W) of an image file from its header, without decoding it (EXIF rotations by 90° swap them);
    ImageReadError as :func:`read_image` for a missing, empty or unreadable file."""
    path = os.fspath(path)
    _check_file(path)
    try:
        from PIL import Image

        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except Exception as e:
        raise ImageReadError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from e
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def read_image(path: Union[str, os.PathLike], fmt: str = "RGB") -> np.ndarray:
    """Read an image file as an H×W×3 uint8 array in ``fmt`` ("RGB" or "BGR"), applying the EXIF orientation.

    Raises ImageReadError naming the file for missing, empty, truncated or undecodable files.
    """
    if fmt not in ("RGB", "BGR"):
        raise ValueError(f"read_image: fmt must be 'RGB' or 'BGR', got {fmt!r}")
    path = os.fspath(path)
    _check_file(path)
    try:
        from PIL import Image

        with Image.open(path) as img:
            img.load()  # decode now, so truncated files fail here
            img = utils._apply_exif_orientation(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(img).astype(np.uint32)
                array = (array >> 8 if array.max() > 255 else array).clip(0, 255).astype(np.uint8)
            else:
                array = np.asarray(img.convert("RGB"))
    except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError for truncation, ...)
        raise ImageReadError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from e
    array = to_uint8_hwc(array, path)
    return array[:, :, ::-1].copy() if fmt == "BGR" else array


def read_label_image(path: str, fmt: Optional[str], what: str = "Label image", record: str = "") -> np.ndarray:
    """A label PNG read with Detectron2's ``read_image(path, fmt)`` (values kept as stored; "RGB" for panoptic PNGs).

    A missing file raises FileNotFoundError, an empty or undecodable one ImageReadError; both name ``what``, the file
    and the dataset record.
    """
    where = f" (dataset record {record})" if record else ""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path}{where} does not exist")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"{what} {path}{where}: the file is empty (0 bytes)")
    try:
        array = utils.read_image(path, format=fmt)
        if array.size == 0:
            raise ValueError(f"empty image of shape {array.shape}")
        return array
    except Exception as e:
        raise ImageReadError(f"{what} {path}{where}: cannot read the image ({type(e).__name__}: {e})") from e


def load_input_image(image, fmt: str = "RGB", array_format: str = "RGB", name: str = "image") -> np.ndarray:
    """An inference input as an H×W×3 uint8 array in ``fmt`` (the model's INPUT.FORMAT).

    ``image``: a file path (read as ``fmt``), an array H×W or H×W×C (see :func:`to_uint8_hwc`) or a tensor H×W×C or
    C×H×W, arrays and tensors in ``array_format`` ("RGB" or "BGR"). Anything else raises ImageReadError naming
    ``name``. Used by the predictor and the export runtime, so both accept the same inputs.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, fmt)
    if hasattr(image, "detach") and hasattr(image, "numpy"):  # a torch tensor
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
            image = image.transpose(1, 2, 0)  # CHW -> HWC
    if not isinstance(image, np.ndarray):
        raise ImageReadError(f"{name}: expected a file path, numpy array or tensor, got {type(image).__name__}")
    image = to_uint8_hwc(image, name)
    if array_format != fmt:
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)
