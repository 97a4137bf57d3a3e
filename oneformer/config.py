"""Config adders for OneFormer.

Every key and default below is the original release's, so the original YAML files merge unchanged. Apply them
after Detectron2's ``add_deeplab_config`` in this order: ``add_common_config``, ``add_swin_config``,
``add_dinat_config``, ``add_convnext_config``, ``add_oneformer_config`` (``add_oneformer_config_all`` does all).
Keys marked "unused" exist only so that the original YAML files load; nothing reads them.

``merge_config(cfg, config_file, opts)`` merges a YAML file and ``KEY VALUE`` overrides like Detectron2 does, but a
failure raises :class:`ConfigError` whose message names the key, the file (or _BASE_ file) or override it came from,
and the closest existing keys (``difflib``), e.g.::

    Unknown config key 'MODEL.ONE_FORMER.NUM_OBJECT_QUERY' in config file my.yaml. Did you mean
    'MODEL.ONE_FORMER.NUM_OBJECT_QUERIES'? ...

A file that is not a YAML mapping of keys (empty, plain text, a list, broken YAML), itself or as a _BASE_ file, is
reported in one line naming it. The window sizes (``SIZE_KEYS``) take an int n (a square, stored as [n, n]) as well
as [h, w], in files and overrides; Detectron2's type check would refuse an int against their list default.

``train_net.py``, ``demo/demo.py``, ``tools/export_model.py`` and ``OneFormerPredictor.from_config_file`` merge their
configs with it.
"""
import contextlib
import difflib
import logging
import os
import re
from typing import List, Optional, Sequence

from detectron2.config import CfgNode as CN

__all__ = [
    "ConfigError",
    "SIZE_KEYS",
    "merge_config",
    "check_overrides",
    "resolve_config_file",
    "suggest_config_keys",
    "add_common_config",
    "add_swin_config",
    "add_dinat_config",
    "add_convnext_config",
    "add_oneformer_config",
    "add_oneformer_config_all",
]


def add_common_config(cfg):
    """Data, solver, text-encoder and test keys shared by every OneFormer model."""
    cfg.INPUT.DATASET_MAPPER_NAME = "oneformer_unified"
    cfg.INPUT.COLOR_AUG_SSD = False
    # add_deeplab_config defines it too; set it here so the adder also works alone.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # -1: no fixed-size padding in the training mappers
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    cfg.INPUT.TASK_SEQ_LEN = 77
    cfg.INPUT.MAX_SEQ_LEN = 77
    # cumulative thresholds: u < SEMANTIC -> semantic, u < INSTANCE -> instance, else panoptic
    cfg.INPUT.TASK_PROB = CN()
    cfg.INPUT.TASK_PROB.SEMANTIC = 0.33
    cfg.INPUT.TASK_PROB.INSTANCE = 0.66
    # COCO large-scale jitter
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0

    cfg.DATASETS.TEST_PANOPTIC = ("",)
    cfg.DATASETS.TEST_INSTANCE = ("",)
    cfg.DATASETS.TEST_SEMANTIC = ("",)

    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1

    cfg.WANDB = CN()
    cfg.WANDB.PROJECT = "OneFormer"
    cfg.WANDB.NAME = None

    cfg.MODEL.IS_TRAIN = True
    cfg.MODEL.IS_DEMO = False

    cfg.MODEL.TEXT_ENCODER = CN()
    cfg.MODEL.TEXT_ENCODER.WIDTH = 256
    cfg.MODEL.TEXT_ENCODER.CONTEXT_LENGTH = 77
    cfg.MODEL.TEXT_ENCODER.NUM_LAYERS = 12
    cfg.MODEL.TEXT_ENCODER.VOCAB_SIZE = 49408
    cfg.MODEL.TEXT_ENCODER.PROJ_NUM_LAYERS = 2
    cfg.MODEL.TEXT_ENCODER.N_CTX = 16

    cfg.MODEL.TEST = CN()
    cfg.MODEL.TEST.SEMANTIC_ON = True
    cfg.MODEL.TEST.INSTANCE_ON = False
    cfg.MODEL.TEST.PANOPTIC_ON = False
    cfg.MODEL.TEST.DETECTION_ON = False
    cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.MODEL.TEST.OVERLAP_THRESHOLD = 0.0
    cfg.MODEL.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False
    cfg.MODEL.TEST.TASK = "panoptic"
    # Added here (not in the original): "original" is the release's panoptic rule; "transformers" follows
    # transformers' post_process_panoptic_segmentation (see oneformer/modeling/inference.py), for outputs that match a
    # transformers pipeline run with the same weights. Only the rule changes: masks still reach the output size
    # through this model's resize, which crops the padding of inputs whose size is not a multiple of 32.
    cfg.MODEL.TEST.PANOPTIC_RULE = "original"
    # Added here: sliding-window inference (oneformer/modeling/sliding_window.py). SIZE / STRIDE: n (a square, stored
    # as [n, n] by merge_config), [n] or [h, w] pixels, multiples of 4; empty: the training crop and 2/3 of it. MERGE_IOU: mask IoU inside a window overlap above which
    # two same-class queries of neighbouring windows are one object. An input's "sliding_window" (bool) overrides
    # ENABLED.
    cfg.MODEL.TEST.SLIDING_WINDOW = CN()
    cfg.MODEL.TEST.SLIDING_WINDOW.ENABLED = False
    cfg.MODEL.TEST.SLIDING_WINDOW.SIZE = []
    cfg.MODEL.TEST.SLIDING_WINDOW.STRIDE = []
    cfg.MODEL.TEST.SLIDING_WINDOW.MERGE_IOU = 0.5

    # unused (kept so the original YAML files load)
    cfg.TEST.AUG.IS_SLIDE = False
    cfg.TEST.AUG.CROP_SIZE = (640, 640)
    cfg.TEST.AUG.STRIDE = (426, 426)
    cfg.TEST.AUG.SCALE = (2048, 640)
    cfg.TEST.AUG.SETR_MULTI_SCALE = True
    cfg.TEST.AUG.KEEP_RATIO = True
    cfg.TEST.AUG.SIZE_DIVISOR = 32

    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"
    cfg.MODEL.SEM_SEG_HEAD.SEM_EMBED_DIM = 256  # unused
    cfg.MODEL.SEM_SEG_HEAD.INST_EMBED_DIM = 256  # unused
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    # unused: the pixel decoder uses 4 points and MODEL.ONE_FORMER.NHEADS, as the original does
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8
    # Added here (not in the original): "fp32" runs the pixel decoder in float32 as the original always does;
    # "autocast" lets it follow a surrounding torch.autocast (float16/bfloat16 deformable attention on CUDA).
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_PRECISION = "fp32"
    # Added here: how float32 linear layers run in CPU inference, "onednn" (faster on the model's GEMM shapes, see
    # oneformer/modeling/cpu_linear.py) or "native" (PyTorch's F.linear, MKL), eager and in MODEL.COMPILE_FREEZE graphs
    # (where "native" leaves the weight packing to inductor). Training and GPUs are unaffected.
    cfg.MODEL.CPU_LINEAR_BACKEND = "onednn"
    # Added here: run the network (backbone, pixel decoder, transformer decoder) through torch.compile, with this
    # backend and mode ("" = torch.compile's default); inference is one graph for all image sizes
    # (oneformer/modeling/compile.py). Pre- and post-processing and the losses stay eager.
    cfg.MODEL.COMPILE = False
    cfg.MODEL.COMPILE_BACKEND = "inductor"
    cfg.MODEL.COMPILE_MODE = ""
    # inference only: the weights become constants of the compiled graph (faster CPU linears), one static graph per
    # padded size; for serving fixed sizes with weights that do not change after the first call (not for evaluation
    # during training)
    cfg.MODEL.COMPILE_FREEZE = False


def add_oneformer_config(cfg):
    """MODEL.ONE_FORMER.*: loss weights, decoder sizes and point sampling."""
    cfg.MODEL.ONE_FORMER = CN()
    cfg.MODEL.ONE_FORMER.DEEP_SUPERVISION = True
    cfg.MODEL.ONE_FORMER.NO_OBJECT_WEIGHT = 0.1
    cfg.MODEL.ONE_FORMER.CLASS_WEIGHT = 1.0
    cfg.MODEL.ONE_FORMER.DICE_WEIGHT = 1.0
    cfg.MODEL.ONE_FORMER.MASK_WEIGHT = 20.0
    cfg.MODEL.ONE_FORMER.CONTRASTIVE_WEIGHT = 0.5
    cfg.MODEL.ONE_FORMER.CONTRASTIVE_TEMPERATURE = 0.07

    cfg.MODEL.ONE_FORMER.NHEADS = 8
    cfg.MODEL.ONE_FORMER.DROPOUT = 0.1
    cfg.MODEL.ONE_FORMER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.ONE_FORMER.ENC_LAYERS = 0
    cfg.MODEL.ONE_FORMER.CLASS_DEC_LAYERS = 2
    cfg.MODEL.ONE_FORMER.DEC_LAYERS = 6
    cfg.MODEL.ONE_FORMER.PRE_NORM = False
    cfg.MODEL.ONE_FORMER.HIDDEN_DIM = 256
    cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES = 120
    cfg.MODEL.ONE_FORMER.NUM_OBJECT_CTX = 16  # unused
    cfg.MODEL.ONE_FORMER.USE_TASK_NORM = True
    cfg.MODEL.ONE_FORMER.TRANSFORMER_IN_FEATURE = "res5"
    cfg.MODEL.ONE_FORMER.ENFORCE_INPUT_PROJ = False
    # the model pads its batch to a multiple of this
    cfg.MODEL.ONE_FORMER.SIZE_DIVISIBILITY = 32
    cfg.MODEL.ONE_FORMER.TRANSFORMER_DECODER_NAME = "ContrastiveMultiScaleMaskedTransformerDecoder"

    # point-sampled mask losses (PointRend importance sampling)
    cfg.MODEL.ONE_FORMER.TRAIN_NUM_POINTS = 112 * 112
    cfg.MODEL.ONE_FORMER.OVERSAMPLE_RATIO = 3.0
    cfg.MODEL.ONE_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75


def add_swin_config(cfg):
    """MODEL.SWIN.*: Swin Transformer v1 backbone (defaults are Swin-T)."""
    cfg.MODEL.SWIN = CN()
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224
    cfg.MODEL.SWIN.PATCH_SIZE = 4
    cfg.MODEL.SWIN.EMBED_DIM = 96
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    cfg.MODEL.SWIN.MLP_RATIO = 4.0
    cfg.MODEL.SWIN.QKV_BIAS = True
    cfg.MODEL.SWIN.QK_SCALE = None
    cfg.MODEL.SWIN.DROP_RATE = 0.0
    cfg.MODEL.SWIN.ATTN_DROP_RATE = 0.0
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.3
    cfg.MODEL.SWIN.APE = False
    cfg.MODEL.SWIN.PATCH_NORM = True
    cfg.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.SWIN.USE_CHECKPOINT = False


def add_dinat_config(cfg):
    """MODEL.DiNAT.* (mixed case, as in the original): dilated neighborhood attention backbone."""
    cfg.MODEL.DiNAT = CN()
    cfg.MODEL.DiNAT.DEPTHS = [3, 4, 18, 5]
    cfg.MODEL.DiNAT.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.DiNAT.EMBED_DIM = 64
    cfg.MODEL.DiNAT.MLP_RATIO = 3.0
    cfg.MODEL.DiNAT.NUM_HEADS = [2, 4, 8, 16]
    cfg.MODEL.DiNAT.DROP_PATH_RATE = 0.2
    cfg.MODEL.DiNAT.KERNEL_SIZE = 7
    cfg.MODEL.DiNAT.DILATIONS = [[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4], [1, 2, 1, 2, 1]]
    cfg.MODEL.DiNAT.OUT_INDICES = (0, 1, 2, 3)
    cfg.MODEL.DiNAT.QKV_BIAS = True
    cfg.MODEL.DiNAT.QK_SCALE = None
    cfg.MODEL.DiNAT.DROP_RATE = 0.0
    cfg.MODEL.DiNAT.ATTN_DROP_RATE = 0.0
    cfg.MODEL.DiNAT.IN_PATCH_SIZE = 4


def add_convnext_config(cfg):
    """MODEL.CONVNEXT.*: ConvNeXt v1 backbone (defaults are ConvNeXt-L)."""
    cfg.MODEL.CONVNEXT = CN()
    cfg.MODEL.CONVNEXT.IN_CHANNELS = 3
    cfg.MODEL.CONVNEXT.DEPTHS = [3, 3, 27, 3]
    cfg.MODEL.CONVNEXT.DIMS = [192, 384, 768, 1536]
    cfg.MODEL.CONVNEXT.DROP_PATH_RATE = 0.4
    cfg.MODEL.CONVNEXT.LSIT = 1.0  # layer-scale init value; the original spelling
    cfg.MODEL.CONVNEXT.OUT_INDICES = [0, 1, 2, 3]
    cfg.MODEL.CONVNEXT.OUT_FEATURES = ["res2", "res3", "res4", "res5"]


def add_oneformer_config_all(cfg):
    """Apply Detectron2's DeepLab adder, the five OneFormer adders in the original order and the training keys of
    ``oneformer.engine.config``; returns ``cfg``."""
    from detectron2.projects.deeplab import add_deeplab_config

    add_deeplab_config(cfg)
    add_common_config(cfg)
    add_swin_config(cfg)
    add_dinat_config(cfg)
    add_convnext_config(cfg)
    add_oneformer_config(cfg)
    # train_net's keys (W&B switch, AMP dtype, clip types, extra hooks), so configs dumped by training load anywhere
    from .engine.config import add_oneformer_engine_config

    add_oneformer_engine_config(cfg)
    return cfg


# ------------------------------------------------------------------------------------------------------------------
# merging with errors that say which key, from where, and what was probably meant


class ConfigError(ValueError):
    """A config file or override could not be merged; the message names the key, its source and close matches."""


_UNKNOWN_KEY = re.compile(r"Non-existent (?:config )?key: (\S+)")
_TYPED_KEY = re.compile(r"for config key: (\S+)")


def _all_keys(node, prefix: str = "") -> List[str]:
    """Every full key of ``node``: the sub-nodes ("MODEL.SWIN") and the leaves ("MODEL.SWIN.EMBED_DIM")."""
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, dict):
            keys.extend(_all_keys(v, full + "."))
    return keys


def suggest_config_keys(cfg, key: str, n: int = 3) -> List[str]:
    """Up to ``n`` existing keys of ``cfg`` closest to ``key``: by the whole dotted key, then by its last part."""
    keys = _all_keys(cfg)
    found = difflib.get_close_matches(key, keys, n=n, cutoff=0.6)
    leaf = key.rsplit(".", 1)[-1]
    by_leaf = {}
    for k in keys:
        by_leaf.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    for name in difflib.get_close_matches(leaf, list(by_leaf), n=n, cutoff=0.75):
        # among keys with that last part, those whose section is most alike first
        same = sorted(by_leaf[name], key=lambda k: -difflib.SequenceMatcher(None, k, key).ratio())
        found.extend(k for k in same if k not in found)
    return found[:n]


def _yaml_chain(config_file: str, seen=None) -> List[tuple]:
    """[(path, loaded dict)] for ``config_file`` and its _BASE_ files (resolved as Detectron2 does), derived first."""
    import yaml

    seen = set() if seen is None else seen
    if config_file in seen or not os.path.isfile(config_file):
        return []
    seen.add(config_file)
    try:
        with open(config_file) as f:
            data = yaml.safe_load(f) or {}
    except Exception:
        return []
    if not isinstance(data, dict):
        return []
    chain = [(config_file, data)]
    bases = data.get("_BASE_", [])
    for base in bases if isinstance(bases, list) else [bases]:
        base = os.path.expanduser(str(base))
        if not base.startswith(("/", "https://", "http://")):
            base = os.path.join(os.path.dirname(config_file), base)
        chain.extend(_yaml_chain(base, seen))
    return chain


def _defines(data: dict, key: str) -> bool:
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _source_of(key: str, config_file: Optional[str]) -> str:
    where = f"config file {config_file}"
    for path, data in _yaml_chain(config_file):
        if _defines(data, key):
            return where if path == config_file else f"{where} (set in its _BASE_ file {path})"
    return where


def _config_error(exc: Exception, cfg, source: str, config_file: Optional[str] = None, opts=()) -> ConfigError:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    unknown = _UNKNOWN_KEY.search(text)
    key = unknown.group(1) if unknown else (_TYPED_KEY.search(text).group(1) if _TYPED_KEY.search(text) else None)
    if key is not None:
        key = key.rstrip(".,;'\"")
        if config_file is not None:
            source = _source_of(key, config_file)
        else:
            values = [v for k, v in zip(opts[0::2], opts[1::2]) if k == key]
            source = f"the override '{key} {values[0]}'" if values else source
    if unknown:
        hint = suggest_config_keys(cfg, key)
        if len(hint) == 1:
            did_you_mean = f" Did you mean {hint[0]!r}?"
        elif hint:
            did_you_mean = " Did you mean one of: " + ", ".join(repr(h) for h in hint) + "?"
        else:
            did_you_mean = " No existing key is close to it."
        return ConfigError(
            f"Unknown config key {key!r} in {source}.{did_you_mean} Keys are defined by Detectron2 and "
            "oneformer.add_oneformer_config_all."
        )
    return ConfigError(f"Cannot merge {source}: {text}")


def resolve_config_file(config_file: str) -> str:
    """``config_file`` when it is a file; else, for a path like "configs/ade20k/..." typed outside the repository,
    the model-zoo config of that name (``oneformer.model_zoo.get_config_file``, logged). Raises ConfigError naming
    the path and the current folder otherwise."""
    if os.path.isfile(config_file):
        return config_file
    if not os.path.isabs(config_file):
        from .model_zoo import get_config_file

        try:
            found = get_config_file(config_file)
        except FileNotFoundError:
            found = None
        if found is not None:
            # a warning: also printed where logging is not set up yet (train_net's command line, the demo)
            logging.getLogger(__name__).warning("Config file %s is not in the current folder: using the model "
                                                "zoo's %s", config_file, found)
            return found
    raise ConfigError(f"Config file {config_file} does not exist (current folder: {os.getcwd()})")


# a config key as typed on a command line: upper-case dotted words ("MODEL.WEIGHTS"), which no value looks like
_KEY_LIKE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)+$")


def check_overrides(opts: Sequence[str], where: str = "the KEY VALUE overrides",
                    fix: str = "write it before the KEY VALUE pairs") -> None:
    """Raise ConfigError, quoting ``opts`` as typed, when they are not KEY VALUE pairs: an option ("--eval-only")
    among them (``fix`` says where it belongs), or a key without a value (the last of an odd count, or a key followed
    by another key, e.g. "MODEL.WEIGHTS MODEL.DEVICE cpu"). ``where`` names the overrides in the message."""
    opts = [str(o) for o in opts]
    typed = " ".join(opts)
    for o in opts:
        if o.startswith("--"):
            raise ConfigError(f"{o!r} is among {where} '{typed}', where it would be read as a config key: {fix}")
    for i in range(0, len(opts), 2):
        if i + 1 == len(opts) or (_KEY_LIKE.match(opts[i]) and _KEY_LIKE.match(opts[i + 1])):
            raise ConfigError(f"Config override {opts[i]!r} has no value in {where} '{typed}': give KEY VALUE pairs")


def _yaml_problem(path: str):
    """Why ``path`` is not a YAML mapping of config keys (None when it is one, or when it needs Detectron2's unsafe
    loader: tags that ``yaml.safe_load`` does not construct)."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.constructor.ConstructorError:
        return None
    except yaml.MarkedYAMLError as e:
        where = f" (line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1})" if e.problem_mark else ""
        what = ", ".join(p for p in (e.context, e.problem) if p)
        return f"not valid YAML: {what}{where}"
    except (OSError, yaml.YAMLError) as e:
        return f"cannot be read as YAML: {' '.join(str(e).split())}"
    if data is None:
        return "the file is empty: a config is a YAML mapping of keys, e.g. 'SOLVER:' / '  BASE_LR: 0.0001'"
    if not isinstance(data, dict):
        return (f"it holds a YAML {type(data).__name__}, not a mapping of config keys (e.g. 'SOLVER:' / "
                "'  BASE_LR: 0.0001')")
    return None


def _check_yaml_files(config_file: str, seen=None) -> None:
    """Raise ConfigError when ``config_file`` or one of its local _BASE_ files is not a YAML mapping of keys (Detectron2
    would fail on it with an unrelated Python error such as "'str' object has no attribute 'items'")."""
    import yaml

    seen = set() if seen is None else seen
    pending = [(config_file, None)]
    while pending:
        path, child = pending.pop()
        if path in seen or not os.path.isfile(path):
            continue  # a missing _BASE_ file gets Detectron2's error
        seen.add(path)
        problem = _yaml_problem(path)
        if problem is not None:
            which = "" if child is None else f"its _BASE_ file {path}: "
            raise ConfigError(f"Cannot merge config file {config_file}: {which}{problem}")
        with open(path) as f:
            try:
                bases = (yaml.safe_load(f) or {}).get("_BASE_", [])
            except yaml.YAMLError:
                continue
        for base in bases if isinstance(bases, list) else [bases]:
            base = os.path.expanduser(str(base))
            if base.startswith(("https://", "http://")):
                continue
            pending.append((base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base), path))


# window sizes: an int n (a square) or [h, w] (also [n]); stored as [h, w]
SIZE_KEYS = ("MODEL.TEST.SLIDING_WINDOW.SIZE", "MODEL.TEST.SLIDING_WINDOW.STRIDE")


def _parent(cfg, key: str):
    """(the node holding ``key``'s last part, that part), or (None, part) when ``cfg`` has no such key."""
    *path, leaf = key.split(".")
    node = cfg
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return (node, leaf) if isinstance(node, dict) and leaf in node else (None, leaf)


def _size_value(value, key: str, source: str) -> list:
    """``value`` (an int, or a list/tuple of 1 or 2 ints; [] = unset) as [h, w] (or []); ConfigError otherwise."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if isinstance(value, (list, tuple)) and len(value) == 0:
        return []
    items = [value] if is_int(value) else list(value) if isinstance(value, (list, tuple)) else None
    if items is None or len(items) not in (1, 2) or not all(is_int(v) and v > 0 for v in items):
        raise ConfigError(f"{key} must be a positive int (a square) or [h, w] positive ints, got {value!r} "
                          f"(in {source})")
    return items * 2 if len(items) == 1 else items


@contextlib.contextmanager
def _sizes_accept_ints(cfg, source_of):
    """While merging, the SIZE_KEYS hold None, which Detectron2's type check lets any value replace; afterwards a
    new value is checked and stored as [h, w] (``source_of(key)`` names where it came from in the error), a key left
    alone gets its value back."""
    saved = {}
    for key in SIZE_KEYS:
        node, leaf = _parent(cfg, key)
        if node is not None:
            saved[key] = node[leaf]
            dict.__setitem__(node, leaf, None)
    try:
        yield
    except BaseException:
        for key, old in saved.items():
            node, leaf = _parent(cfg, key)
            dict.__setitem__(node, leaf, old)
        raise
    for key, old in saved.items():
        node, leaf = _parent(cfg, key)
        new = node[leaf]
        dict.__setitem__(node, leaf, old)  # restored first: an error leaves the config as it was
        if new is not None:
            dict.__setitem__(node, leaf, _size_value(new, key, source_of(key)))


def merge_config(cfg, config_file: Optional[str] = None, opts: Sequence[str] = ()):
    """``cfg.merge_from_file(config_file)`` then ``cfg.merge_from_list(opts)``; returns ``cfg``.

    Raises ConfigError (a ValueError) for a missing or invalid file (not a YAML mapping of keys), overrides that are
    not KEY VALUE pairs (``check_overrides``), an unknown key (the message names the key, the file — or _BASE_ file —
    or override that set it, and the closest existing keys) or a value of the wrong type. The SIZE_KEYS take an int
    (a square) or a pair, stored as [h, w].
    """
    if config_file:
        config_file = resolve_config_file(config_file)
        _check_yaml_files(config_file)
        try:
            with _sizes_accept_ints(cfg, lambda key: _source_of(key, config_file)):
                cfg.merge_from_file(config_file)
        except ConfigError:
            raise
        except Exception as e:
            raise _config_error(e, cfg, f"config file {config_file}", config_file=config_file) from e
    opts = list(opts or ())
    if opts:
        check_overrides(opts)

        def override(key):
            return f"the override '{key} {[v for k, v in zip(opts[0::2], opts[1::2]) if k == key][-1]}'"

        try:
            with _sizes_accept_ints(cfg, override):
                cfg.merge_from_list(opts)
        except ConfigError:
            raise
        except Exception as e:
            raise _config_error(e, cfg, "the KEY VALUE overrides", opts=opts) from e
    return cfg
