"""tools/gpu_checks.sh --dry-run: every step of the GPU run on the CPU (bundled synthetic model, tiny sizes), one
summary line each; the check of the carried wheel folder; tools/gpu_wheels.py's reading of requirements."""
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import gpu_checks
import gpu_wheels

LINE = re.compile(r"^\[gpu_checks\] ([\w-]+): (ok|skipped|FAILED) \([\d.]+ s\) (.*)$", re.MULTILINE)


def make_wheel_folder(folder, carried=("tabulate", "yacs"), left=("scipy",)):
    """A wheel folder as `make gpu-wheels` writes it: a manifest and the carried files (dummy contents)."""
    folder.mkdir(parents=True)
    needs = []
    for name in carried + left:
        file = f"{name}-1.0-py3-none-any.whl"
        needs.append({"name": name, "version": "1.0", "file": file, "size": 2**20, "imported": True,
                      "carried": name in carried})
        if name in carried:
            (folder / file).write_bytes(b"0" * 2**20)
    (folder / "manifest.json").write_text(json.dumps({"python": "3.12", "torch": "2.11", "numpy": "2.5",
                                                      "budget_mb": 48, "needs": needs}))
    return folder


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    pytest.importorskip("transformers")  # the peer of the inference steps
    tmp = tmp_path_factory.mktemp("gpu_checks")
    wheels = make_wheel_folder(tmp / "wheels")
    proc = subprocess.run(["sh", "tools/gpu_checks.sh", "--dry-run", "--log-dir", str(tmp / "logs"),
                           "--wheels", str(wheels)], cwd=REPO, env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=900, check=False)
    return proc, tmp


@pytest.mark.slow
def test_dry_run_prints_one_line_per_step(dry_run):
    proc, tmp = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    lines = {m.group(1): (m.group(2), m.group(3)) for m in LINE.finditer(proc.stdout)}
    assert list(lines) == list(dict.fromkeys(gpu_checks.PARTS["1"] + gpu_checks.PARTS["2"]))
    assert {k for k, (status, _) in lines.items() if status != "ok"} == {"build"}
    assert lines["build"][0] == "skipped" and "'built': True" in lines["build"][1]
    assert "2 of 3 needed wheels, 2.0 MiB" in lines["wheels"][1] and "scipy (1 MiB)" in lines["wheels"][1]
    assert "no GPU" in lines["environment"][1]
    assert re.search(r"\d+ skipped", lines["tests"][1])  # the CUDA tests are collected, and skipped on a CPU
    b1 = lines["inference-b1"][1]
    for label in ("eager fp32", "eager bf16", "compiled bf16", "transformers fp32", "transformers bf16",
                  "compiled bf16 / transformers fp32"):
        assert label + " " in b1 or label + ":" in b1, (label, b1)
    # the variants agree with eager fp32 and with transformers (same weights, transformers' panoptic rule)
    agreement = [float(x) for x in re.findall(r"\[([\d.]+)% px", b1)]
    assert len(agreement) == 2 and min(agreement) > 95, b1
    assert float(re.search(r"\(([\d.]+)% px same segment as transformers", b1).group(1)) > 95
    assert "(compile " in b1
    assert "batch 2:" in lines["inference-b8"][1] and "transformers fp32" in lines["inference-b8"][1]
    for variant in ("none", "backbone", "all"):
        line = lines[f"train-{variant}"][1]
        assert f"checkpointing {variant}:" in line and "s/iter over 2 iterations after 2 warm-up" in line, line
        assert float(re.search(r"peak RSS ([\d.]+) GiB", line).group(1)) > 0.1
        assert not list((tmp / "logs" / f"train-{variant}").glob("*.pth"))  # the checkpoint is not kept
        assert "Evaluation results" not in (tmp / "logs" / f"train-{variant}.log").read_text()
    for backbone in ("dinat", "convnext"):
        assert "fp32 eager" in lines[backbone][1] and "img/s" in lines[backbone][1]
    assert re.match(r"2 rows; kernel speed-up .* max output diff float32 \S+$", lines["op-benchmark"][1])
    assert "13 steps, 0 failed" in proc.stdout.splitlines()[-1]
    assert (tmp / "logs" / "inference-b1.json").exists() and (tmp / "logs" / "train-all.log").exists()


def test_a_carried_wheel_that_is_absent_fails_the_step(tmp_path):
    wheels = make_wheel_folder(tmp_path / "wheels")
    (wheels / "yacs-1.0-py3-none-any.whl").unlink()
    run = gpu_checks.Run(gpu_checks.parse_args(["--dry-run", "--wheels", str(wheels), "--log-dir",
                                                str(tmp_path / "logs")]))
    with pytest.raises(gpu_checks.StepFailed, match="yacs-1.0-py3-none-any.whl"):
        gpu_checks.step_wheels(run)


def test_a_failed_prerequisite_skips_the_later_steps(tmp_path, capsys):
    wheels = make_wheel_folder(tmp_path / "wheels")
    (wheels / "tabulate-1.0-py3-none-any.whl").unlink()
    assert gpu_checks.main(["--dry-run", "--steps", "wheels,tests", "--wheels", str(wheels),
                            "--log-dir", str(tmp_path / "logs")]) == 1
    out = capsys.readouterr().out
    assert re.search(r"wheels: FAILED .*tabulate", out)
    assert re.search(r"tests: skipped \([\d.]+ s\) wheels failed", out)
    assert "2 steps, 1 failed (wheels)" in out


def test_arguments():
    with pytest.raises(SystemExit):
        gpu_checks.parse_args([])  # a GPU run names its part
    with pytest.raises(SystemExit):
        gpu_checks.parse_args(["--dry-run", "--steps", "inference-b1,benchmark"])
    args = gpu_checks.parse_args(["--part", "2"])
    assert args.step_names == gpu_checks.PARTS["2"] and args.budget == 450


def test_wheel_requirements_drop_numpy_and_extras(tmp_path):
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("demo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
                     "Requires-Dist: numpy<2\nRequires-Dist: yacs>=0.1.8\n"
                     "Requires-Dist: pytest; extra == \"dev\"\n")
    assert gpu_wheels.wheel_requirements(path) == ["yacs>=0.1.8"]


def test_run_requirements_come_from_pyproject():
    if sys.version_info < (3, 11):
        pytest.importorskip("tomli")
    deps, extras = gpu_wheels.pyproject_requirements()
    assert any(d.startswith("torch>=") for d in deps) and any(d.startswith("fvcore") for d in deps)
    assert [gpu_wheels.canonical(gpu_wheels._name(r)) for r in extras] == list(gpu_wheels.RUN_EXTRAS)


def test_wheels_unpack_without_pip(tmp_path):
    path = tmp_path / "demo-1.0-cp312-cp312-manylinux_2_17_x86_64.whl"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("demo/__init__.py", "VALUE = 1\n")
        whl.writestr("demo-1.0.data/platlib/demo_ext.py", "X = 2\n")
        whl.writestr("demo-1.0.data/scripts/demo-cli", "#!python\n")
        whl.writestr("demo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    site = tmp_path / "site"
    gpu_checks.unpack_wheels([str(path)], str(site))
    assert (site / "demo" / "__init__.py").read_text() == "VALUE = 1\n" and (site / "demo_ext.py").exists()
    assert (site / "demo-1.0.dist-info" / "METADATA").exists() and not list(site.rglob("demo-cli"))
    code = "import demo, demo_ext, importlib.metadata as m; print(demo.VALUE + demo_ext.X, m.version('demo'))"
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(site)},
                          capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["3", "1.0"]


def test_standard_library_backports_are_recognized(tmp_path):
    backport, package = tmp_path / "typing-3.7.4.3-py3-none-any.whl", tmp_path / "yacs-0.1.8-py3-none-any.whl"
    for path, module in ((backport, "typing.py"), (package, "yacs/__init__.py")):
        with zipfile.ZipFile(path, "w") as whl:
            whl.writestr(module, "")
            whl.writestr(path.name.split("-")[0] + ".dist-info/METADATA", "Name: x\n")
    assert gpu_wheels.stdlib_backport(backport) == ["typing"] and gpu_wheels.stdlib_backport(package) == []
