"""The project on today's stack (numpy 1.26 .. 2.x, Python 3.10 .. 3.13, setuptools without pkg_resources).

- No API that numpy 2 removed is used (ruff's NPY201 rule), nor ``np.array(..., copy=False)`` (an error in numpy 2
  whenever a copy is needed), nor ``pkg_resources`` (gone in setuptools 82) or ``detectron2.model_zoo`` (imports it):
  statically (ruff's banned-api rule, configured in pyproject.toml) and at run time (importing every module).
- detectron2 (the republish) and panopticapi declare numpy<2 and are installed without that pin
  (tools/install_detectron2.sh): panopticapi's PQ runs here on whatever numpy is installed; detectron2's evaluators run
  in tests/evaluation.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.tiny import REPO

SOURCES = ["oneformer", "tools", "demo", "datasets", "tests", "train_net.py", "setup.py"]


def test_no_api_removed_by_numpy2_or_setuptools():
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "NPY201,TID251", "--output-format", "concise",
         "--no-cache", *SOURCES],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_no_numpy_array_copy_false():
    # numpy 2: copy=False means "never copy" and raises when a copy is needed (numpy 1: "copy only if needed");
    # np.asarray is the spelling that means the same on both
    pattern = re.compile(r"np\.array\([^()]*(\([^()]*\)[^()]*)*copy\s*=\s*False")
    found = []
    for top in SOURCES:
        path = os.path.join(REPO, top)
        files = [path] if path.endswith(".py") else [
            os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".py")
        ]
        for f in files:
            with open(f, encoding="utf-8") as fh:
                text = fh.read()
            found += [f"{os.path.relpath(f, REPO)}: {m.group(0)}" for m in pattern.finditer(text)]
    found = [f for f in found if not f.startswith("tests/test_stack.py")]
    assert not found, found


_IMPORT_EVERYTHING = r"""
import importlib, pkgutil, runpy, sys
sys.modules["pkg_resources"] = None  # an import of it fails here, naming the importer
import oneformer
names = [m.name for m in pkgutil.walk_packages(oneformer.__path__, "oneformer.")]
for name in names:
    importlib.import_module(name)
for script in ("train_net.py", "demo/demo.py", "tools/export_model.py", "tools/convert_hf_oneformer.py"):
    sys.argv = [script, "--help"]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        assert e.code in (0, None), (script, e.code)
bad = [m for m in ("pkg_resources", "detectron2.model_zoo") if sys.modules.get(m) is not None]
print(len(names), "modules;", "loaded:", bad)
assert not bad, bad
"""


def test_importing_every_module_loads_no_pkg_resources():
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EVERYTHING], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "loaded: []" in proc.stdout


def _pq_files(root, name, ids):
    """A one-image COCO panoptic json + PNG folder with segments of ``ids`` (H, W) (id = category * 1000 + k)."""
    folder = os.path.join(root, name)
    os.makedirs(folder)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(os.path.join(folder, "img.png"))
    segments = [{"id": int(i), "category_id": int(i) // 1000, "iscrowd": 0, "area": int((ids == i).sum()),
                 "bbox": [0, 0, 1, 1]} for i in np.unique(ids) if i]
    path = os.path.join(root, name + ".json")
    with open(path, "w") as f:
        json.dump({"images": [{"id": 1, "file_name": "img.jpg", "height": ids.shape[0], "width": ids.shape[1]}],
                   "annotations": [{"image_id": 1, "file_name": "img.png", "segments_info": segments}],
                   "categories": [{"id": 1, "name": "thing", "isthing": 1}, {"id": 2, "name": "stuff",
                                                                              "isthing": 0}]}, f)
    return path, folder


def test_panopticapi_runs_on_the_installed_numpy(tmp_path):
    """panopticapi-lite declares numpy<2; installed without the pin it computes PQ on numpy 2 too."""
    from panopticapi.evaluation import pq_compute

    gt = np.full((32, 48), 2000, dtype=np.int64)
    gt[4:20, 4:20], gt[10:30, 25:45] = 1000, 1001
    pred = gt.copy()
    pred[10:30, 25:45] = 2000  # the second thing is missed, the stuff segment grows
    gt_json, gt_dir = _pq_files(str(tmp_path), "gt", gt)
    pred_json, pred_dir = _pq_files(str(tmp_path), "pred", pred)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # pq_compute prints, and writes nothing; it is run from the data's folder like the evaluator
    try:
        perfect = pq_compute(gt_json, gt_json, gt_folder=gt_dir, pred_folder=gt_dir)
        res = pq_compute(gt_json, pred_json, gt_folder=gt_dir, pred_folder=pred_dir)
    finally:
        os.chdir(cwd)
    assert perfect["All"]["pq"] == pytest.approx(1.0)
    # things: 1 TP (IoU 1) + 1 FN -> PQ 2/3; stuff: IoU 880 / 1280 > 0.5 -> PQ = that IoU
    assert res["Things"]["pq"] == pytest.approx(2 / 3)
    assert res["Stuff"]["pq"] == pytest.approx(880 / 1280)


def test_installing_the_extras_here_downloads_nothing_and_keeps_the_editable_install():
    """What the README tells users with an existing environment: `pip install --no-build-isolation -e ".[app,export]"`
    (or uv's `uv pip install`, in a venv without pip) asks for nothing but the package itself (no second torch, no
    other numpy), and the package stays editable."""
    args = ["--no-build-isolation", "-e", ".[app,export]"]
    env = dict(os.environ, ONEFORMER_NO_EXT="1")  # resolution only: nothing to compile
    # asked in a subprocess: looking pip up here would switch setuptools' distutils shim to the standard library's
    # distutils for the rest of this process (Python < 3.12), which breaks inductor's later C++ builds
    has_pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0
    if has_pip:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-",
                               "--disable-pip-version-check", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        installs = json.loads(proc.stdout)["install"]
        assert sorted(item["metadata"]["name"] for item in installs) == ["oneformer"], installs
        assert installs[0]["download_info"]["dir_info"].get("editable") is True
    else:  # a uv venv
        proc = subprocess.run(["uv", "pip", "install", "--dry-run", "--python", sys.executable, *args],
                              cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        added = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith(" + ")]
        assert added == ["oneformer"], proc.stderr[-3000:]


def test_an_older_torch_is_refused_in_one_line():
    code = "import torch; torch.__version__ = '2.10.1+cpu'; import oneformer"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last == ("ImportError: oneformer needs torch >= 2.11, found 2.10.1+cpu: "
                    "pip install 'torch>=2.11,<2.15' torchvision"), proc.stderr[-2000:]
