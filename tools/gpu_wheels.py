#!/usr/bin/env python
"""Build the wheel folder that tools/gpu_checks.py installs from on a bare GPU machine (`make gpu-wheels`).

The GPU machines lent to this project run Python 3.12 with torch and numpy preinstalled and cannot download
anything; their working tree arrives with at most 64 MiB of ignored paths. This resolves, for CPython 3.12 on
manylinux x86-64 (``pip install --dry-run --report`` with ``--python-version``/``--platform``, nothing installed
here), what the GPU run needs:

- the project's dependencies from pyproject.toml, except torch (preinstalled there; its CUDA dependencies would not
  fit) — torchvision is downloaded on its own, ``--no-deps``, for the torch series of ``--torch``;
- of the ``test`` extra, what the run uses: pytest, hypothesis (the CUDA tests) and transformers (the peer);
- detectron2 (the ``sal-detectron2`` republish, its cp310 wheel renamed to py3 as tools/install_detectron2.sh does)
  and ``panopticapi-lite``, with the requirements from their metadata less numpy;

numpy is pinned to ``--numpy`` for the resolution and not carried; neither are backports of standard-library modules
(``typing``), which would hide the standard library. Projects that publish only a source distribution
(fvcore, iopath, antlr4-python3-runtime) are built into wheels here first: those that a resolution for this
interpreter would build from source, and any the target's resolution still finds without a wheel. Every resolved
wheel is downloaded (``--no-deps``), then the folder keeps as many as fit in
``--budget-mb``: first the distributions whose modules the run imports (found by importing its entry points in a
child process of this interpreter, mapped with ``importlib.metadata.packages_distributions``), each group smallest
first; ``--first NAME ...`` puts named ones ahead of all. What does not fit is listed in ``manifest.json`` as not
carried: gpu_checks.py fails its wheels step naming it if the GPU machine lacks it.

    python tools/gpu_wheels.py --dest .whl/gpu312
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DETECTRON2 = "sal-detectron2==0.7.2"
PANOPTICAPI = "panopticapi-lite==0.2.0"
RUN_EXTRAS = ("pytest", "hypothesis", "transformers")  # of the test extra: what the GPU run uses
# the entry points of the GPU run, imported to find which distributions it imports
PROBE = """
import sys
sys.path[:0] = [{repo!r}, {tools!r}]
import train_net, benchmark_inference, benchmark_train_memory, convert_hf_oneformer, train_synthetic
import oneformer.modeling, oneformer.data, oneformer.evaluation
import pytest, hypothesis, safetensors, tokenizers
from transformers import OneFormerForUniversalSegmentation, OneFormerImageProcessor
import torch.utils.tensorboard  # train_net's TensorBoard writer imports it at its first write
print("\\n".join(sorted({{m.split(".")[0] for m in list(sys.modules)}})))
"""


def _name(req):
    return re.match(r"[A-Za-z0-9._-]+", req).group(0)


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_requirements():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    test = {canonical(_name(r)): r for r in project["optional-dependencies"]["test"]}
    return project["dependencies"], [test[n] for n in RUN_EXTRAS]


def wheel_requirements(path):
    """Requires-Dist of a wheel, less numpy and extras-only requirements."""
    with zipfile.ZipFile(path) as whl:
        meta = Parser().parsestr(whl.read(next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA")))
                                 .decode("utf-8"))
    return [r for r in meta.get_all("Requires-Dist") or []
            if canonical(_name(r)) != "numpy" and not re.search(r"\bextra\s*==", r)]


def stdlib_backport(path):
    """The top-level modules of a wheel that the standard library has (a backport for older Pythons), if any."""
    with zipfile.ZipFile(path) as whl:
        top = {n.split("/")[0].removesuffix(".py") for n in whl.namelist()
               if not n.split("/")[0].endswith((".dist-info", ".data"))}
    return sorted(top & set(sys.stdlib_module_names))


class Pip:
    def __init__(self, python_version):
        self.target = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
                       "--abi", "cp" + python_version.replace(".", ""), "--abi", "abi3", "--abi", "none"]
        # every manylinux level a torch-2.11 machine (glibc >= 2.28) runs
        for minor in range(17, 29):
            self.target += ["--platform", f"manylinux_2_{minor}_x86_64"]
        self.target += ["--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64"]

    def __call__(self, *args, check=True):
        cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if check and proc.returncode:
            sys.exit(f"gpu_wheels: {' '.join(cmd[:6])} ... failed:\n{proc.stderr[-3000:]}")
        return proc


def resolve(pip, requirements, local, tmp):
    """Resolve ``requirements`` for the target; sdist-only projects are built into ``local`` and retried."""
    req_file = os.path.join(tmp, "requirements.txt")
    with open(req_file, "w") as f:
        f.write("\n".join(requirements) + "\n")
    report = os.path.join(tmp, "report.json")
    # projects without wheels (e.g. fvcore, iopath, antlr4-python3-runtime): what a resolution for this interpreter,
    # where source distributions are allowed, would build
    pip("install", "-q", "--dry-run", "--ignore-installed", "--report", report, "-r", req_file)
    with open(report) as f:
        for item in json.load(f)["install"]:
            if not item["download_info"]["url"].endswith(".whl"):
                req = f"{item['metadata']['name']}=={item['metadata']['version']}"
                print(f"gpu_wheels: {req} has no wheel: building one from its source distribution")
                pip("wheel", "-q", "--no-deps", "-w", local, req)
    for _ in range(10):
        proc = pip("install", "-q", "--dry-run", "--ignore-installed", "--report", report, "--find-links", local,
                   *pip.target, "-r", req_file, check=False)
        if proc.returncode == 0:
            with open(report) as f:
                return json.load(f)["install"]
        m = re.search(r"No matching distribution found for (\S+)", proc.stderr)
        if not m:
            sys.exit(f"gpu_wheels: resolution failed:\n{proc.stderr[-3000:]}")
        req = m.group(1).rstrip(";")
        print(f"gpu_wheels: {req} has no wheel for the target: building one from its source distribution")
        pip("wheel", "-q", "--no-deps", "-w", local, req)
    sys.exit("gpu_wheels: resolution did not converge")


def imported_distributions():
    from importlib import metadata

    proc = subprocess.run([sys.executable, "-c", PROBE.format(repo=REPO, tools=os.path.join(REPO, "tools"))],
                          capture_output=True, text=True, cwd=REPO, check=False)
    if proc.returncode:
        sys.exit(f"gpu_wheels: importing the run's entry points failed:\n{proc.stderr[-3000:]}")
    table = metadata.packages_distributions()
    return {canonical(d) for m in proc.stdout.split() for d in table.get(m, [])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", default=os.path.join(REPO, ".whl", "gpu312"))
    p.add_argument("--python-version", default="3.12")
    p.add_argument("--torch", default="2.11", help="the GPU machine's torch series (picks torchvision)")
    p.add_argument("--numpy", default="2.5", help="the GPU machine's numpy series (for the resolution only)")
    p.add_argument("--budget-mb", type=float, default=48.0, help="largest total size of the carried wheels")
    p.add_argument("--first", nargs="*", default=[], help="distributions to carry before all others")
    args = p.parse_args(argv)
    pip = Pip(args.python_version)
    os.makedirs(args.dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        local, staged = os.path.join(tmp, "local"), os.path.join(tmp, "staged")
        os.makedirs(local)
        os.makedirs(staged)
        # detectron2 and panopticapi: wheels for any Python 3, their requirements less numpy
        pip("download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.10", "-d", tmp,
            DETECTRON2, PANOPTICAPI)
        extra = []
        for path in sorted(os.listdir(tmp)):
            if path.endswith(".whl"):
                py3 = re.sub(r"-cp\d+-none-any\.whl$", "-py3-none-any.whl", path)
                shutil.move(os.path.join(tmp, path), os.path.join(staged, py3))
                extra += wheel_requirements(os.path.join(staged, py3))
        deps, run_extras = pyproject_requirements()
        torch_series = [r for r in deps if canonical(_name(r)) in ("torch", "torchvision")]
        requirements = [r for r in deps + extra if canonical(_name(r)) not in ("torch", "torchvision")]
        requirements += run_extras + [f"numpy=={args.numpy}.*"]
        install = resolve(pip, requirements, local, tmp)
        pins = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in install
                if canonical(i["metadata"]["name"]) != "numpy"]
        torch_minor = int(args.torch.split(".")[1])
        pins.append(f"torchvision==0.{torch_minor + 15}.*")  # torchvision 0.(N+15) goes with torch 2.N
        print(f"gpu_wheels: {len(pins)} distributions for CPython {args.python_version} "
              f"(torch {args.torch} and numpy {args.numpy} are the machine's; declared: {', '.join(torch_series)})")
        pip("download", "-q", "--no-deps", "--find-links", local, *pip.target, "-d", staged, *pins)
        for path in os.listdir(local):
            shutil.copy(os.path.join(local, path), staged)
        wheels = {}
        for path in sorted(os.listdir(staged)):
            name = canonical(path.split("-")[0])
            shadowed = stdlib_backport(os.path.join(staged, path))
            if shadowed:
                # e.g. `typing` (cityscapesscripts requires it): first on PYTHONPATH it would hide the standard library
                print(f"gpu_wheels: {path} left out: a backport of the standard library's {', '.join(shadowed)}")
                continue
            wheels[name] = {"name": name, "version": path.split("-")[1], "file": path,
                            "size": os.path.getsize(os.path.join(staged, path))}
        imported = imported_distributions()
        first = [canonical(n) for n in args.first]
        order = sorted(wheels.values(), key=lambda w: (w["name"] not in first, w["name"] not in imported, w["size"]))
        budget, total = args.budget_mb * 2**20, 0
        for w in order:
            w["imported"] = w["name"] in imported
            w["carried"] = total + w["size"] <= budget
            if w["carried"]:
                total += w["size"]
        for old in os.listdir(args.dest):
            if old.endswith(".whl"):
                os.remove(os.path.join(args.dest, old))
        for w in order:
            if w["carried"]:
                shutil.copy(os.path.join(staged, w["file"]), args.dest)
    manifest = {"python": args.python_version, "torch": args.torch, "numpy": args.numpy,
                "budget_mb": args.budget_mb, "needs": sorted(order, key=lambda w: w["name"])}
    with open(os.path.join(args.dest, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    left = [f"{w['name']} {w['size'] / 2**20:.1f} MiB{' (imported)' if w['imported'] else ''}"
            for w in order if not w["carried"]]
    print(f"gpu_wheels: {os.path.relpath(args.dest, REPO)}: {sum(w['carried'] for w in order)} of {len(order)} "
          f"wheels, {total / 2**20:.1f} MiB (budget {args.budget_mb:g} MiB); not carried: {'; '.join(left) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
