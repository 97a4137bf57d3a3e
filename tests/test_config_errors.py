"""Config keys that do not exist (and other bad configs): the error names the key, where it was set and the closest
existing keys, in merge_config, train_net.py and OneFormerPredictor.from_config_file."""
import subprocess
import sys

import pytest
from detectron2.config import get_cfg

from oneformer import train_net
from oneformer import add_oneformer_config_all
from oneformer.config import ConfigError, merge_config, suggest_config_keys
from oneformer.predictor import OneFormerPredictor
from tests.tiny import REPO


def _cfg():
    return add_oneformer_config_all(get_cfg())


@pytest.fixture
def yamls(tmp_path):
    (tmp_path / "base.yaml").write_text("MODEL:\n  ONE_FORMER:\n    NUM_OBJECT_QUERY: 50\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nSOLVER:\n  BASE_LR: 0.001\n")
    (tmp_path / "typo.yaml").write_text("SOLVER:\n  BASE_LRR: 0.001\n")
    (tmp_path / "section.yaml").write_text("MODEL:\n  ONEFORMER:\n    HIDDEN_DIM: 64\n")
    (tmp_path / "broken.yaml").write_text("MODEL: [\n")
    (tmp_path / "good.yaml").write_text("SOLVER:\n  BASE_LR: 0.5\n")
    return tmp_path


def test_unknown_key_in_file_names_it_and_suggests(yamls):
    with pytest.raises(ConfigError, match=r"^Unknown config key 'SOLVER.BASE_LRR' in config file .*typo.yaml\. "
                                          r"Did you mean one of: 'SOLVER.BASE_LR'"):
        merge_config(_cfg(), str(yamls / "typo.yaml"))


def test_unknown_key_in_a_base_file_names_that_file(yamls):
    with pytest.raises(ConfigError, match=r"'MODEL.ONE_FORMER.NUM_OBJECT_QUERY' in config file .*child.yaml \(set in "
                                          r"its _BASE_ file .*base.yaml\)\. Did you mean one of: "
                                          r"'MODEL.ONE_FORMER.NUM_OBJECT_QUERIES'"):
        merge_config(_cfg(), str(yamls / "child.yaml"))


def test_unknown_section_suggests_the_section(yamls):
    with pytest.raises(ConfigError, match=r"Unknown config key 'MODEL.ONEFORMER' .* 'MODEL.ONE_FORMER'"):
        merge_config(_cfg(), str(yamls / "section.yaml"))


def test_unknown_override_names_the_override(yamls):
    with pytest.raises(ConfigError, match=r"Unknown config key 'MODEL.SWIN.EMBEDDIM' in the override "
                                          r"'MODEL.SWIN.EMBEDDIM 64'\. Did you mean one of: 'MODEL.SWIN.EMBED_DIM'"):
        merge_config(_cfg(), str(yamls / "good.yaml"), ["SOLVER.MAX_ITER", "5", "MODEL.SWIN.EMBEDDIM", "64"])


def test_other_config_errors(yamls):
    with pytest.raises(ConfigError, match=r"Cannot merge the override 'SOLVER.MAX_ITER 1.5': Type mismatch"):
        merge_config(_cfg(), None, ["SOLVER.MAX_ITER", "1.5"])
    with pytest.raises(ConfigError, match=r"^Config override 'SOLVER.MAX_ITER' has no value in the KEY VALUE "
                                          r"overrides 'SOLVER.MAX_ITER': give KEY VALUE pairs$"):
        merge_config(_cfg(), None, ["SOLVER.MAX_ITER"])
    with pytest.raises(ConfigError, match=r"Config file .*nope.yaml does not exist"):
        merge_config(_cfg(), str(yamls / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"Cannot merge config file .*broken.yaml: not valid YAML: while parsing"):
        merge_config(_cfg(), str(yamls / "broken.yaml"))
    cfg = merge_config(_cfg(), str(yamls / "good.yaml"), ["SOLVER.MAX_ITER", "5"])
    assert cfg.SOLVER.BASE_LR == 0.5 and cfg.SOLVER.MAX_ITER == 5


@pytest.mark.parametrize("opts, message", [
    # a key without its value, last or followed by the next key (was: merged as MODEL.WEIGHTS = "MODEL.DEVICE")
    (["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS"], "Config override 'MODEL.WEIGHTS' has no value in the KEY VALUE "
                                               "overrides 'MODEL.DEVICE cpu MODEL.WEIGHTS': give KEY VALUE pairs"),
    (["MODEL.WEIGHTS", "MODEL.DEVICE", "cpu"], "Config override 'MODEL.WEIGHTS' has no value in the KEY VALUE "
                                               "overrides 'MODEL.WEIGHTS MODEL.DEVICE cpu'"),
    # an option after the pairs (argparse.REMAINDER puts it among them)
    (["MODEL.WEIGHTS", "m.pth", "--eval-only"], "'--eval-only' is among the KEY VALUE overrides 'MODEL.WEIGHTS m.pth "
                                                "--eval-only', where it would be read as a config key: write it "
                                                "before the KEY VALUE pairs"),
])
def test_overrides_that_are_not_pairs_are_quoted(opts, message):
    with pytest.raises(ConfigError) as e:
        merge_config(_cfg(), None, opts)
    assert str(e.value).startswith(message)


def test_train_net_options_after_the_overrides(tmp_path):
    """The README launcher calls train_net's main: its ConfigError is the message; the command line prints it."""
    args = train_net.default_argument_parser().parse_args(["MODEL.WEIGHTS", "m.pth", "--eval-only"])
    assert args.eval_only is False and args.opts[-1] == "--eval-only"
    with pytest.raises(ConfigError, match="'--eval-only' is among the KEY VALUE overrides 'MODEL.WEIGHTS m.pth "
                                          "--eval-only'"):
        train_net.build_config(args)
    with pytest.raises(SystemExit, match="^train_net.py: '--eval-only' is among"):
        train_net.cli(["MODEL.DEVICE", "cpu", "--eval-only", "--resume"])


def test_suggestions():
    assert suggest_config_keys(_cfg(), "MODEL.SEM_SEG_HEAD.NUM_CLASS")[0] == "MODEL.SEM_SEG_HEAD.NUM_CLASSES"
    assert suggest_config_keys(_cfg(), "MAX_CONSECUTIVE_NONFINITE")[0] == "SOLVER.MAX_CONSECUTIVE_NONFINITE"
    assert suggest_config_keys(_cfg(), "ZZZZZZZZ") == []


def test_train_net_build_config(yamls):
    args = train_net.default_argument_parser().parse_args(["--config-file", str(yamls / "typo.yaml")])
    with pytest.raises(ConfigError, match="SOLVER.BASE_LRR"):
        train_net.build_config(args)
    args = train_net.default_argument_parser().parse_args(["MODEL.TEST.TASK", "depth"])
    with pytest.raises(ConfigError, match=r"MODEL.TEST.TASK must be one of \('semantic', 'instance', 'panoptic', "
                                          r"'all'\), got 'depth'"):
        train_net.build_config(args)


def test_train_net_cli_prints_one_line_not_a_traceback(yamls):
    proc = subprocess.run([sys.executable, "train_net.py", "--config-file", str(yamls / "good.yaml"),
                           "SOLVER.BASE_LRR", "0.1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert ("train_net.py: Unknown config key 'SOLVER.BASE_LRR' in the override 'SOLVER.BASE_LRR 0.1'. Did you mean "
            "one of: 'SOLVER.BASE_LR'") in proc.stderr


def test_predictor_from_config_file(yamls):
    with pytest.raises(ConfigError, match=r"'MODEL.ONE_FORMER.NUM_OBJECT_QUERY' in config file"):
        OneFormerPredictor.from_config_file(str(yamls / "child.yaml"), device="cpu")
    with pytest.raises(ConfigError, match=r"Unknown config key 'MODEL.DEVICES' in the override"):
        OneFormerPredictor.from_config_file(str(yamls / "good.yaml"), opts=["MODEL.DEVICES", "cpu"], device="cpu")


# ----------------------------------------------------------------------------------------------------------------
# window sizes: an int (a square) or a pair, from overrides and files; positive ints only


SIZE, STRIDE = "MODEL.TEST.SLIDING_WINDOW.SIZE", "MODEL.TEST.SLIDING_WINDOW.STRIDE"


@pytest.mark.parametrize("value, expected", [("512", [512, 512]), ("[512]", [512, 512]), ("[512, 640]", [512, 640]),
                                             ("(384, 512)", [384, 512]), ("[]", [])])
def test_window_size_override_takes_an_int_or_a_pair(value, expected):
    cfg = merge_config(_cfg(), None, [SIZE, value, STRIDE, "256"])
    assert cfg.MODEL.TEST.SLIDING_WINDOW.SIZE == expected
    assert cfg.MODEL.TEST.SLIDING_WINDOW.STRIDE == [256, 256]


def test_window_size_in_a_file_and_the_windows_built_from_it(tmp_path):
    from oneformer.modeling.sliding_window import sliding_window_from_cfg

    path = tmp_path / "windows.yaml"
    path.write_text("MODEL:\n  TEST:\n    SLIDING_WINDOW:\n      SIZE: 512\n      STRIDE: [256, 384]\n")
    cfg = merge_config(_cfg(), str(path))
    assert cfg.MODEL.TEST.SLIDING_WINDOW.SIZE == [512, 512] and cfg.MODEL.TEST.SLIDING_WINDOW.STRIDE == [256, 384]
    window = sliding_window_from_cfg(cfg)
    assert window.size == (512, 512) and window.stride == (256, 384)
    # an override of the file's value; a file that does not set it keeps the earlier value
    assert merge_config(cfg, None, [SIZE, "640"]).MODEL.TEST.SLIDING_WINDOW.SIZE == [640, 640]
    other = tmp_path / "other.yaml"
    other.write_text("SOLVER:\n  BASE_LR: 0.5\n")
    assert merge_config(cfg, str(other)).MODEL.TEST.SLIDING_WINDOW.SIZE == [640, 640]
    args = train_net.default_argument_parser().parse_args(["--config-file", str(path), STRIDE, "128"])
    assert train_net.build_config(args).MODEL.TEST.SLIDING_WINDOW.STRIDE == [128, 128]


@pytest.mark.parametrize("value", ["0", "-64", "[512, 0]", "[1, 2, 3]", "abc", "1.5", "True", "[512, '640']"])
def test_bad_window_sizes_are_one_line(value):
    with pytest.raises(ConfigError) as e:
        merge_config(_cfg(), None, [SIZE, value])
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{SIZE} must be a positive int (a square) or [h, w] positive ints, got ")
    assert message.endswith(f"(in the override '{SIZE} {value}')")


def test_bad_window_size_in_a_file_names_the_file(tmp_path):
    (tmp_path / "base.yaml").write_text("MODEL:\n  TEST:\n    SLIDING_WINDOW:\n      STRIDE: -3\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\n")
    with pytest.raises(ConfigError, match=rf"^{STRIDE} must be a positive int .*, got -3 \(in config file "
                                          r".*child.yaml \(set in its _BASE_ file .*base.yaml\)\)$"):
        merge_config(_cfg(), str(tmp_path / "child.yaml"))


def test_other_keys_keep_their_type_check():
    with pytest.raises(ConfigError, match=r"Type mismatch"):
        merge_config(_cfg(), None, ["MODEL.SWIN.DEPTHS", "2"])
    with pytest.raises(ConfigError, match=r"Type mismatch"):
        merge_config(_cfg(), None, ["INPUT.CROP.SIZE", "512"])


def test_export_tool_merges_like_the_others():
    from tests.tiny import load_script

    export_model = load_script("export_model", "tools")
    args = export_model.get_parser().parse_args(
        ["--config-file", f"{REPO}/configs/synthetic/oneformer_synthetic.yaml", "--output", "x.pt2", SIZE, "64"])
    assert export_model.setup_cfg(args).MODEL.TEST.SLIDING_WINDOW.SIZE == [64, 64]


# ----------------------------------------------------------------------------------------------------------------
# config files that are not a YAML mapping of keys


@pytest.mark.parametrize("text, problem", [
    ("", "the file is empty: a config is a YAML mapping of keys"),
    ("# only a comment\n", "the file is empty: a config is a YAML mapping of keys"),
    ("hello world\n", "it holds a YAML str, not a mapping of config keys"),
    ("- MODEL\n- SOLVER\n", "it holds a YAML list, not a mapping of config keys"),
    ("MODEL: [\n", "not valid YAML: while parsing a flow node, expected the node content, but found '<stream end>' "
                   "(line 2, column 1)"),
])
def test_config_file_that_is_not_a_mapping_is_one_line(tmp_path, text, problem):
    path = tmp_path / "my.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        merge_config(_cfg(), str(path))
    assert str(e.value).startswith(f"Cannot merge config file {path}: {problem}"), str(e.value)
    assert "\n" not in str(e.value)
    (tmp_path / "child.yaml").write_text("_BASE_: my.yaml\nSOLVER:\n  BASE_LR: 0.5\n")  # also as a _BASE_ file
    with pytest.raises(ConfigError, match=rf"^Cannot merge config file .*child.yaml: its _BASE_ file {path}: "):
        merge_config(_cfg(), str(tmp_path / "child.yaml"))
    args = train_net.default_argument_parser().parse_args(["--config-file", str(path)])
    with pytest.raises(ConfigError, match=r"^Cannot merge config file .*my.yaml: "):
        train_net.build_config(args)
