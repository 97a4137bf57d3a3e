#!/usr/bin/env python
"""Every GPU check of the project as one prepared run, in two parts that each fit one call of a lent GPU machine
(≤ 8 minutes), or on the CPU as a dry run (``--dry-run``) so that the script cannot rot between GPU loans.

    sh tools/gpu_checks.sh --part 1      # environment, wheels, CUDA build, CUDA tests, op, inference batch 1 and 8
    sh tools/gpu_checks.sh --part 2      # environment, wheels, build (kept from part 1), training, DiNAT, ConvNeXt
    sh tools/gpu_checks.sh --dry-run     # both parts on the CPU: bundled synthetic model, tiny sizes, 2 iterations

Steps (each in its own process, time-boxed, its full log under ``--log-dir``; each prints one summary line
``[gpu_checks] STEP: ok|FAILED|skipped (SECONDS s) DETAILS``):

- ``environment``: Python, torch, CUDA, numpy and the GPU (or CPU).
- ``wheels``: the distributions the run needs (``<wheels>/manifest.json``, written by ``make gpu-wheels``, i.e.
  tools/gpu_wheels.py) that this interpreter lacks are installed from the carried wheel folder with
  ``pip install --no-index --no-deps --target <log-dir>/site`` (unpacked by this script where pip is missing;
  nothing is downloaded; the base environment is not touched; every later step runs with that folder first on
  PYTHONPATH). A need counts as found when any version of it is installed. A need that is missing and was not carried
  (over the folder's size budget) fails the step and names it. Dry run: checks the folder against its manifest.
- ``build``: ``setup.py build_ext --inplace`` with FORCE_CUDA=1 for TORCH_CUDA_ARCH_LIST (default: the visible GPU's
  capability) and MAX_JOBS; skipped when ``oneformer.ops._C`` already has its CUDA kernels (part 2 after part 1).
- ``tests``: the CUDA tests (``-k cuda``: the op against its reference in every dtype, opcheck of the custom operators
  on CUDA in float32/float64/float16/bfloat16, the model on CUDA against the CPU).
- ``op-benchmark``: tools/benchmark_ms_deform_attn.py (the deformable attention kernel against its reference, every
  CUDA dtype): the range of speed-ups and the largest output difference per dtype.
- ``inference-b1``, ``inference-b8``: tools/benchmark_inference.py, Swin-L ADE20K at 640×640, panoptic, batch 1 and
  8, random weights: eager fp32 (the reference), eager bf16 autocast with the pixel decoder following autocast,
  ``torch.compile`` bf16, ``torch.compile`` bf16 with CUDA graphs (``reduce-overhead``), and transformers' OneFormer
  with the same converted weights in fp32 and bf16 autocast, all in separate processes taking turns. Ours uses
  ``MODEL.TEST.PANOPTIC_RULE transformers`` so that its panoptic output can be compared with transformers' pixel for
  pixel. Prints images/s, peak ``torch.cuda.max_memory_allocated``, the compile time apart, the agreement of each
  with eager fp32 and with transformers fp32, and compiled bf16 / transformers fp32 in images/s.
- ``data``: generated training data (tools/train_synthetic.py --generate-only) at the recipe's crop size.
- ``train-none``, ``train-backbone``, ``train-all``: ``train_net.py --num-gpus 1`` with
  configs/ade20k/swin/oneformer_swin_large_1gpu_24gb.yaml on that data at the recipe's crop and batch, bf16 AMP,
  activation checkpointing off / backbone / backbone + pixel-decoder encoder: s/iter over 20 iterations after 2
  warm-up iterations (Detectron2's "Overall training speed": it times every iteration from the third on, hooks
  excluded) and peak memory (``max_mem`` of the last logged iteration, i.e.
  ``torch.cuda.max_memory_allocated``; CPU: the process's peak RSS).
- ``dinat``, ``convnext``: one fp32 eager inference line of DiNAT-L and ConvNeXt-L (batch 1, 640×640).

Dry run: the same steps on the CPU with configs/synthetic/oneformer_synthetic.yaml and its bundled weights (DiNAT and
ConvNeXt: their configs with a tiny backbone), 64×64 images, batch 1 (every variant) and 2 (eager fp32 and
transformers fp32), one timed run, ``torch.compile`` with
the ``eager`` backend (dynamo's tracing without inductor's code generation, which takes minutes on a CPU), CUDA
graphs left out, and training with 2 iterations after the warm-up, without AMP; the CUDA build and CUDA tests report
what a CPU can check (the CPU build is present; the CUDA tests are collected and skipped).

``--part`` also bounds the part's wall time (``--budget``, default 450 s): a step gets at most what is left, and a
step with less than 10 s left is skipped with a line. When environment, wheels or build fails, the later steps are
skipped. Exit status: 1 when any step failed.
"""
import argparse
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WHEELS = os.path.join(REPO, ".whl", "gpu312")
SWIN_L = "configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml"
RECIPE = "configs/ade20k/swin/oneformer_swin_large_1gpu_24gb.yaml"
DINAT_L = "configs/ade20k/dinat/oneformer_dinat_large_bs16_160k.yaml"
CONVNEXT_L = "configs/ade20k/convnext/oneformer_convnext_large_bs16_160k.yaml"
SYNTHETIC = "configs/synthetic/oneformer_synthetic.yaml"
SYNTHETIC_WEIGHTS = "demo/assets/oneformer_synthetic.pth"
# the variants of a training step: (MODEL.BACKBONE.ACTIVATION_CHECKPOINT, MODEL.SEM_SEG_HEAD.ENCODER_...)
CHECKPOINTING = {"none": (False, False), "backbone": (True, False), "all": (True, True)}
PARTS = {
    "1": ["environment", "wheels", "build", "tests", "op-benchmark", "inference-b1", "inference-b8"],
    "2": ["environment", "wheels", "build", "data", "train-none", "train-backbone", "train-all", "dinat", "convnext"],
}
# steps that the later ones need: when one fails, the rest of the part is skipped
PREREQUISITES = ("environment", "wheels", "build")
# a dry run's backbones: the large configs with a tiny backbone (the CPU would spend minutes on random init)
TINY_BACKBONE = {
    "dinat": ["MODEL.DiNAT.EMBED_DIM", "32", "MODEL.DiNAT.DEPTHS", "[1, 1, 1, 1]", "MODEL.DiNAT.NUM_HEADS",
              "[1, 2, 4, 8]", "MODEL.DiNAT.DILATIONS", "[[1], [1], [1], [1]]"],
    "convnext": ["MODEL.CONVNEXT.DEPTHS", "[1, 1, 1, 1]", "MODEL.CONVNEXT.DIMS", "[32, 64, 128, 256]"],
}
TINY_HEAD = ["MODEL.ONE_FORMER.DEC_LAYERS", "2", "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1"]


class Run:
    """The settings of one run (GPU or dry run) and the state shared by its steps."""

    def __init__(self, args):
        self.args = args
        self.dry = args.dry_run
        self.device = "cpu" if self.dry else "cuda"
        self.log_dir = os.path.abspath(args.log_dir)
        self.site = os.path.join(self.log_dir, "site")
        self.env = dict(os.environ, PYTHONUNBUFFERED="1",
                        PYTHONPATH=os.pathsep.join([self.site, REPO] + ([os.environ["PYTHONPATH"]]
                                                                         if os.environ.get("PYTHONPATH") else [])))
        self.deadline = time.monotonic() + args.budget
        self.py = sys.executable

    def remaining(self):
        return self.deadline - time.monotonic()

    def call(self, name, cmd, timeout, env=None):
        """Run ``cmd`` with its output in ``<log-dir>/<name>.log``; returns (exit code, output, peak RSS in MiB).
        Exit code 124: the time box ran out (the process group is killed)."""
        timeout = max(1, min(timeout, self.remaining()))
        path = os.path.join(self.log_dir, f"{name}.log")
        with open(path, "w") as log:
            log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
            log.flush()
            proc = subprocess.Popen(cmd, cwd=REPO, env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            start = time.monotonic()
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    rc = os.waitstatus_to_exitcode(status)
                    proc.returncode = rc
                    break
                if time.monotonic() - start > timeout:
                    os.killpg(proc.pid, 9)
                    _, status, usage = os.wait4(proc.pid, 0)
                    proc.returncode = rc = 124
                    break
                time.sleep(0.2)
        with open(path, errors="replace") as f:
            out = f.read()
        return rc, out, usage.ru_maxrss / 1024

    def python(self, name, argv, timeout):
        return self.call(name, [self.py] + argv, timeout)


class StepFailed(Exception):
    pass


def _tail(out, n=1):
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "no output"


def _check(rc, out, what):
    if rc == 124:
        raise StepFailed(f"{what}: time box ran out ({_tail(out)})")
    if rc != 0:
        raise StepFailed(f"{what}: exit code {rc}: {_tail(out)}")


# ------------------------------------------------------------------------------------------------------------ steps

def step_environment(run):
    code = ("import sys, torch, numpy; g = torch.cuda.is_available(); "
            "print('Python %d.%d.%d' % sys.version_info[:3], '| torch', torch.__version__, '| CUDA', "
            "torch.version.cuda, '| numpy', numpy.__version__, '|', "
            "(torch.cuda.get_device_name(0) + ', %.0f GiB, capability %d.%d' % ((torch.cuda.get_device_properties(0)"
            ".total_memory / 2**30,) + torch.cuda.get_device_capability(0))) if g else "
            "'no GPU (CPU, %d threads)' % torch.get_num_threads())")
    rc, out, _ = run.python("environment", ["-c", code], 60)
    _check(rc, out, "environment")
    if not run.dry and "no GPU" in out:
        raise StepFailed(f"no visible GPU: {_tail(out)} (use --dry-run on a CPU)")
    return _tail(out)


def _installed_version(name):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# a need is also met by these distributions (same import name)
ALTERNATIVES = {"opencv-python": ("opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"),
                "sal-detectron2": ("detectron2",), "panopticapi-lite": ("panopticapi",)}


def step_wheels(run):
    manifest_path = os.path.join(run.args.wheels, "manifest.json")
    if not os.path.exists(manifest_path):
        if run.dry:
            return "skipped", f"no wheel folder {os.path.relpath(run.args.wheels, REPO)} (make gpu-wheels builds it)"
        raise StepFailed(f"{manifest_path} not found: build the folder with `make gpu-wheels` and carry it")
    with open(manifest_path) as f:
        manifest = json.load(f)
    needs = manifest["needs"]
    carried = [n for n in needs if n["carried"]]
    absent = [n["file"] for n in carried if not os.path.exists(os.path.join(run.args.wheels, n["file"]))]
    if absent:
        raise StepFailed(f"the folder lacks wheels its manifest lists: {' '.join(absent)}")
    size = sum(os.path.getsize(os.path.join(run.args.wheels, n["file"])) for n in carried) / 2**20
    left = [f"{n['name']} ({n['size'] / 2**20:.0f} MiB)" for n in needs if not n["carried"]]
    if run.dry:
        return (f"folder for Python {manifest['python']}: {len(carried)} of {len(needs)} needed wheels, "
                f"{size:.1f} MiB; not carried (over the budget of {manifest['budget_mb']} MiB): "
                f"{', '.join(left) or 'none'}")
    sys.path.insert(0, run.site)  # what an earlier part installed counts as found
    missing, found = [], []
    for n in needs:
        have = next((v for v in map(_installed_version, (n["name"],) + ALTERNATIVES.get(n["name"], ())) if v), None)
        (found if have else missing).append(n)
    install = [n for n in missing if n["carried"]]
    not_carried = [n["name"] for n in missing if not n["carried"]]
    if install:
        os.makedirs(run.site, exist_ok=True)
        files = [os.path.join(run.args.wheels, n["file"]) for n in install]
        if subprocess.run([run.py, "-m", "pip", "--version"], capture_output=True, check=False).returncode == 0:
            rc, out, _ = run.python("wheels", ["-m", "pip", "install", "--disable-pip-version-check", "--no-index",
                                               "--no-deps", "--upgrade", "--target", run.site] + files, 180)
            _check(rc, out, "pip install")
        else:
            unpack_wheels(files, run.site)
    line = (f"found {len(found)}, installed {len(install)} into {os.path.relpath(run.site, REPO)}: "
            f"{' '.join(n['name'] + '==' + n['version'] for n in install) or '-'}")
    if not_carried:
        raise StepFailed(line + f"; MISSING and not carried: {' '.join(not_carried)} "
                         "(rebuild the folder with them: make gpu-wheels GPU_WHEELS_FIRST='...')")
    return line


def unpack_wheels(files, site):
    """Install wheels without pip: a wheel's files are laid out for site-packages as they are, except its
    ``*.data/purelib`` and ``*.data/platlib`` folders (moved up); its scripts and headers are not needed here."""
    import zipfile

    for path in files:
        with zipfile.ZipFile(path) as whl:
            for member in whl.infolist():
                parts = member.filename.split("/")
                if parts[0].endswith(".data"):
                    if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                        continue
                    parts = parts[2:]
                target = os.path.join(site, *parts)
                if member.is_dir():
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with whl.open(member) as src, open(target, "wb") as dst:
                    dst.write(src.read())
                mode = member.external_attr >> 16
                if mode & 0o111:
                    os.chmod(target, 0o755)


def _extension_status(run):
    code = "from oneformer.ops import extension_status as s; import json; print(json.dumps(s()))"
    rc, out, _ = run.python("extension_status", ["-c", code], 120)
    _check(rc, out, "oneformer.ops.extension_status")
    return json.loads(out.strip().splitlines()[-1])


def step_build(run):
    status = _extension_status(run)
    if run.dry:
        if not status.get("built"):
            raise StepFailed(f"oneformer.ops._C is not built: {status}")
        return "skipped", f"CUDA build needs a GPU machine; the CPU build is present: {status}"
    if status.get("cuda"):
        return "skipped", f"already built with CUDA kernels: {status}"
    env = dict(run.env, FORCE_CUDA="1", MAX_JOBS=str(run.args.jobs))
    if "TORCH_CUDA_ARCH_LIST" not in env:
        code = "import torch; print('%d.%d' % torch.cuda.get_device_capability())"
        rc, out, _ = run.python("capability", ["-c", code], 60)
        _check(rc, out, "GPU capability")
        env["TORCH_CUDA_ARCH_LIST"] = out.strip().splitlines()[-1]
    for old in glob.glob(os.path.join(REPO, "oneformer", "ops", "_C*.so")):
        os.remove(old)  # a CPU-only library from another torch would be kept by build_ext's time stamps
    t0 = time.monotonic()
    rc, out, _ = run.call("build", [run.py, "setup.py", "-q", "build_ext", "--inplace"], 400, env=env)
    _check(rc, out, "setup.py build_ext")
    status = _extension_status(run)
    if not status.get("cuda"):
        raise StepFailed(f"built without CUDA kernels: {status}")
    return f"sm_{env['TORCH_CUDA_ARCH_LIST'].replace('.', '')}, {time.monotonic() - t0:.0f} s: {status}"


def step_tests(run):
    rc, out, _ = run.python("tests", ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ops",
                                      "tests/test_oneformer_model.py", "-k", "cuda", "-rfEs", "--tb=short"], 400)
    summary = next((ln.strip("= ") for ln in reversed(out.splitlines())
                    if re.search(r"\d+ (passed|failed|skipped|deselected|error)", ln)), "no pytest summary")
    if rc == 124:
        raise StepFailed(f"time box ran out: {summary}")
    failed = [ln.split(" - ")[0] for ln in out.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    if rc != 0:
        raise StepFailed(f"{summary}; " + " ".join(failed[:8]))
    if not run.dry and not re.search(r"\d+ passed", summary):
        raise StepFailed(f"no CUDA test ran: {summary}")
    return summary


def step_op_benchmark(run):
    argv = ["--device", run.device] + (["--sizes", "128", "--batches", "1", "--runs", "1"] if run.dry else
                                       ["--runs", "11"])
    rc, out, _ = run.python("op-benchmark", ["tools/benchmark_ms_deform_attn.py"] + argv, 300)
    _check(rc, out, "benchmark_ms_deform_attn.py")
    rows = [ln.split() for ln in out.splitlines() if re.match(r"\s*\d+\s+\d+\s+\w+\s+fwd", ln)]
    if not rows:
        raise StepFailed(f"no result rows: {_tail(out)}")
    speed = {p: [float(r[6].rstrip("x")) for r in rows if r[3] == p] for p in ("fwd", "fwd+bwd")}
    diffs = {r[2]: float(r[7]) for r in rows if r[3] == "fwd" and len(r) > 7}
    return (f"{len(rows)} rows; kernel speed-up over the reference: forward {min(speed['fwd']):.1f}-"
            f"{max(speed['fwd']):.1f}x, forward+backward {min(speed['fwd+bwd']):.1f}-{max(speed['fwd+bwd']):.1f}x; "
            "max output diff " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))


def _inference_args(run, batch):
    if run.dry:
        # every variant at batch 1; at batch 2 the reference and transformers (the batched code of both), to save the
        # CPU the time of more processes. --extra first: its list ends at the next option, not at the overrides.
        extra = ["--extra", "eager-bf16", "compiled-bf16", "hf-bf16"] if batch == 1 else []
        return extra + ["--config-file", SYNTHETIC, "--weights", SYNTHETIC_WEIGHTS, "--size", "64", "--runs", "1",
                        "--warmup", "1", "--threads", str(run.args.threads), "--batch", str(batch)], [
                            "MODEL.COMPILE_BACKEND", "eager"]
    return ["--extra", "eager-bf16", "compiled-bf16", "cudagraphs-bf16", "hf-bf16", "--config-file", SWIN_L,
            "--size", "640", "--runs", str(run.args.runs), "--warmup", "3", "--batch", str(batch)], []


def _fmt_result(label, r):
    gib = r["peak_mb"] / 1024
    text = f"{label} {r['images_per_s']:.2f} img/s {gib:.2f} GiB"
    if "prepare_s" in r:
        text += f" (compile {r['prepare_s']:.0f} s)"
    if "vs_eager" in r:
        same, identical, n, n_ref = r["vs_eager"]
        text += f" [{same * 100:.2f}% px, segments {'same' if identical else f'{n} vs {n_ref}'}]"
    return text


def step_inference(run, batch):
    path = os.path.join(run.log_dir, f"inference-b{batch}.json")
    argv, opts = _inference_args(run, batch)
    rc, out, _ = run.python(f"inference-b{batch}", ["tools/benchmark_inference.py", "--device", run.device,
                                                    "--task", "panoptic", "--rules", "transformers",
                                                    "--json", path] + argv + opts, 420)
    _check(rc, out, "benchmark_inference")
    with open(path) as f:
        report = json.load(f)
    res = report["results"]
    labels = {"ours, transformers rule": "eager fp32", "ours, eager-bf16": "eager bf16",
              "ours, compiled-bf16": "compiled bf16", "ours, cudagraphs-bf16": "compiled bf16 + CUDA graphs",
              "transformers": "transformers fp32", "transformers, hf-bf16": "transformers bf16"}
    parts = [_fmt_result(labels.get(k, k), r) for k, r in res.items()]
    # the issue's goal: compiled bf16 >= 2x transformers' images/s with the same panoptic output (>= 99% pixels)
    for ours in ("ours, compiled-bf16", "ours, cudagraphs-bf16"):
        for peer in ("transformers", "transformers, hf-bf16"):
            if ours in res and peer in res:
                agree = res[ours].get("vs_transformers", [0, 0])[1]
                parts.append(f"{labels[ours]} / {labels[peer]}: "
                             f"{res[ours]['images_per_s'] / res[peer]['images_per_s']:.2f}x images/s "
                             f"({agree * 100:.2f}% px same segment as transformers fp32)")
    return f"{report['config']} {report['size'][0]}x{report['size'][1]} batch {batch}: " + "; ".join(parts)


def _data_root(run):
    return os.path.join(run.log_dir, "datasets")


def step_data(run):
    size = 64 if run.dry else _recipe_crop(run)
    num = 4 if run.dry else 16
    rc, out, _ = run.python("data", ["tools/train_synthetic.py", "--generate-only", "--data-root", _data_root(run),
                                     "--num-train", str(num), "--num-val", "1", "--num-samples", "0",
                                     "--samples-dir", os.path.join(run.log_dir, "samples"),
                                     "--image-size", str(size)], 300)
    _check(rc, out, "train_synthetic.py --generate-only")
    return f"{num} generated {size}x{size} training images in {os.path.relpath(_data_root(run), REPO)}"


def _recipe_crop(run):
    """INPUT.CROP.SIZE[0] of the 24 GB recipe (read once per run)."""
    if getattr(run, "recipe_crop", None):
        return run.recipe_crop
    code = ("from detectron2.config import get_cfg; from oneformer import add_oneformer_config_all; "
            "from oneformer.config import merge_config; "
            f"c = merge_config(add_oneformer_config_all(get_cfg()), {RECIPE!r}, []); "
            "print(c.INPUT.CROP.SIZE[0], c.SOLVER.IMS_PER_BATCH)")
    rc, out, _ = run.python("recipe", ["-c", code], 120)
    _check(rc, out, "reading the recipe")
    run.recipe_crop = int(out.split()[-2])
    return run.recipe_crop


def step_train(run, variant):
    backbone, encoder = CHECKPOINTING[variant]
    iters = 2 if run.dry else 20
    # Detectron2's IterationTimer times every iteration from the third on, hooks excluded ("Overall training speed")
    warmup = 2
    out_dir = os.path.join(run.log_dir, f"train-{variant}")
    if run.dry:
        config, opts = SYNTHETIC, ["MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN",
                                   "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "SOLVER.AMP.ENABLED", "False"]
    else:
        # every image at the crop's size (the recipe's resize range would also give smaller crops): the memory of the
        # recipe's largest batches, and steady iteration times
        crop = _recipe_crop(run)
        config, opts = RECIPE, ["INPUT.MIN_SIZE_TRAIN", f"({crop},)", "INPUT.MIN_SIZE_TRAIN_SAMPLING", "choice"]
    # no evaluation datasets: Detectron2's EvalHook also evaluates after the last iteration (the recipe's ADE20K
    # validation set is not on the machine)
    no_eval = [item for key in ("TEST", "TEST_PANOPTIC", "TEST_INSTANCE", "TEST_SEMANTIC")
               for item in (f"DATASETS.{key}", "()")]
    opts += no_eval + ["DATASETS.TRAIN", "('synthetic_panoptic_train',)", "MODEL.WEIGHTS", "",
             "SOLVER.MAX_ITER", str(warmup + iters), "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "1000000",
             "TEST.BEST_CHECKPOINT.ENABLED", "False", "MODEL.BACKBONE.ACTIVATION_CHECKPOINT", str(backbone),
             "MODEL.SEM_SEG_HEAD.ENCODER_ACTIVATION_CHECKPOINT", str(encoder), "OUTPUT_DIR", out_dir]
    env = dict(run.env, DETECTRON2_DATASETS=_data_root(run))
    if run.dry:
        env["OMP_NUM_THREADS"] = str(run.args.threads)
    rc, out, rss_mb = run.call(f"train-{variant}", [run.py, "train_net.py", "--config-file", config,
                                                    "--num-gpus", "1"] + opts, 300, env=env)
    _check(rc, out, "train_net.py")
    speed = re.search(r"Overall training speed: (\d+) iterations in \S+ \(([\d.]+) s / it\)", out)
    if not speed:
        raise StepFailed("no 'Overall training speed' line in the log")
    mem = re.findall(r"max_mem: (\d+)M", out)
    peak = f"peak {int(mem[-1]) / 1024:.2f} GiB max_memory_allocated" if mem else f"peak RSS {rss_mb / 1024:.2f} GiB"
    batch = re.search(r"IMS_PER_BATCH: (\d+)", out)  # from the full config that train_net logs
    for f in glob.glob(os.path.join(out_dir, "*.pth")):
        os.remove(f)  # model_final.pth: weights and AdamW state of random weights, GBs for Swin-L
    losses = re.findall(r"total_loss: ([\d.e+-]+|nan|inf)", out)
    if losses and losses[-1] in ("nan", "inf"):
        raise StepFailed(f"total_loss {losses[-1]}")
    size_note = os.path.relpath(config, REPO) if os.path.isabs(config) else config
    return (f"{size_note}, checkpointing {variant}: {float(speed.group(2)):.3f} s/iter over {speed.group(1)} "
            f"iterations after {warmup} warm-up, {peak}" + (f", batch {batch.group(1)}" if batch else "")
            + (f", last total_loss {losses[-1]}" if losses else ""))


def step_backbone(run, name):
    config = {"dinat": DINAT_L, "convnext": CONVNEXT_L}[name]
    path = os.path.join(run.log_dir, f"{name}.json")
    if run.dry:
        argv = ["--size", "64", "--runs", "1", "--warmup", "1", "--threads", str(run.args.threads)]
        opts = TINY_BACKBONE[name] + TINY_HEAD
    else:
        argv, opts = ["--size", "640", "--runs", "5", "--warmup", "2"], []
    rc, out, _ = run.python(name, ["tools/benchmark_inference.py", "--config-file", config, "--device", run.device,
                                   "--no-hf", "--rules", "original", "--json", path] + argv + opts, 300)
    _check(rc, out, "benchmark_inference")
    with open(path) as f:
        report = json.load(f)
    (r,) = report["results"].values()
    tiny = " (tiny backbone)" if run.dry else ""
    return (f"{report['config']}{tiny} {report['size'][0]}x{report['size'][1]} batch 1 fp32 eager, "
            f"{report['params_m']:.1f}M params: {r['images_per_s']:.2f} img/s, {r['peak_mb'] / 1024:.2f} GiB")


STEPS = {
    "environment": step_environment,
    "wheels": step_wheels,
    "build": step_build,
    "tests": step_tests,
    "op-benchmark": step_op_benchmark,
    "inference-b1": lambda run: step_inference(run, 1),
    "inference-b8": lambda run: step_inference(run, 2 if run.dry else 8),  # the dry run's "batch 8" is 2
    "data": step_data,
    "train-none": lambda run: step_train(run, "none"),
    "train-backbone": lambda run: step_train(run, "backbone"),
    "train-all": lambda run: step_train(run, "all"),
    "dinat": lambda run: step_backbone(run, "dinat"),
    "convnext": lambda run: step_backbone(run, "convnext"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["1", "2", "all"], default=None,
                   help="which steps (default: all with --dry-run; a GPU run must name its part)")
    p.add_argument("--dry-run", action="store_true", help="on the CPU, bundled synthetic model, tiny sizes")
    p.add_argument("--steps", default="", help="comma-separated step names instead of a part's")
    p.add_argument("--log-dir", default=None, help="default: build/gpu_checks (dry run: build/gpu_checks_dry)")
    p.add_argument("--wheels", default=DEFAULT_WHEELS, help="the carried wheel folder (make gpu-wheels)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole part (default 450 on a GPU, 600 in a dry run)")
    p.add_argument("--runs", type=int, default=10, help="GPU inference: timed runs per process")
    p.add_argument("--jobs", type=int, default=16, help="MAX_JOBS of the CUDA build")
    p.add_argument("--threads", type=int, default=1, help="dry run: torch threads")
    args = p.parse_args(argv)
    if args.part is None and not args.steps:
        if not args.dry_run:
            p.error("name the part to run on the GPU machine: --part 1 or --part 2 (or --dry-run)")
        args.part = "all"
    names = ([s for s in args.steps.split(",") if s] if args.steps else
             list(dict.fromkeys(PARTS["1"] + PARTS["2"] if args.part == "all" else PARTS[args.part])))
    unknown = [s for s in names if s not in STEPS]
    if unknown:
        p.error(f"unknown steps {unknown}; choose from {list(STEPS)}")
    args.step_names = names
    args.log_dir = args.log_dir or os.path.join(REPO, "build", "gpu_checks_dry" if args.dry_run else "gpu_checks")
    if args.budget is None:
        args.budget = 600.0 if args.dry_run else 450.0
    return args


def main(argv=None):
    args = parse_args(argv)
    run = Run(args)
    os.makedirs(run.log_dir, exist_ok=True)
    mode = "dry run (CPU)" if run.dry else f"part {args.part}" if args.part else f"steps {args.steps}"
    print(f"[gpu_checks] {mode}: steps {','.join(args.step_names)}; logs in {run.log_dir}", flush=True)
    start = time.monotonic()
    failed = []
    for name in args.step_names:
        t0 = time.monotonic()
        blocked = [f for f in failed if f in PREREQUISITES]
        if blocked:
            status, detail = "skipped", f"{blocked[0]} failed"
        elif run.remaining() < 10:
            status, detail = "skipped", f"the part's budget of {args.budget:.0f} s is spent"
        else:
            try:
                detail = STEPS[name](run)
                status = "ok"
                if isinstance(detail, tuple):
                    status, detail = detail
            except StepFailed as e:
                status, detail = "FAILED", str(e)
            except Exception as e:  # noqa: BLE001  (a bug of this script: the other steps still run)
                status, detail = "FAILED", f"{type(e).__name__}: {e}"
        if status == "FAILED":
            failed.append(name)
        print(f"[gpu_checks] {name}: {status} ({time.monotonic() - t0:.1f} s) {detail}", flush=True)
    print(f"[gpu_checks] {mode}: {len(args.step_names)} steps, {len(failed)} failed"
          f"{' (' + ', '.join(failed) + ')' if failed else ''}, {time.monotonic() - start:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
