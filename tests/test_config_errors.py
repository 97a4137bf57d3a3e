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
    with pytest.raises(ConfigError, match=r"Cannot merge config file .*broken.yaml: while parsing"):
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
