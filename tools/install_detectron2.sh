#!/bin/sh
# Make detectron2 and panopticapi (which detectron2's COCOPanopticEvaluator imports) importable by the given Python.
#
# An installed one is kept (e.g. detectron2 built from its git repository). Otherwise they come from PyPI:
# - detectron2: `sal-detectron2`, a republish of detectron2's main branch. The wheel is tagged cp310 but its Python
#   code runs on every Python >= 3.10 (its stale compiled detectron2._C is not loaded), so it is installed under a
#   py3 file name.
# - panopticapi: `panopticapi-lite`, a packaging of cocodataset/panopticapi.
# Both declare numpy<2 without needing it (tests/test_stack.py runs them on numpy 2). Installing them normally would
# drag numpy back to 1.26 (which has no wheels for Python 3.13) and hold opencv-python at 4.x, so each is installed
# with --no-deps, after its other requirements (read from the wheel's metadata, numpy's pin dropped; the project's
# own numpy range in pyproject.toml applies). `pip check` reports the two declarations; that is expected.
#
# Works with pip or, in a venv without pip, with uv (`uv pip install --python PYTHON`). Further arguments go to every
# install command (e.g. `-c constraints.txt`).
set -eu
PY="${1:?usage: install_detectron2.sh PYTHON [PIP_INSTALL_ARGS...]}"
shift
DETECTRON2_WHEEL="sal-detectron2==0.7.2"
PANOPTICAPI_WHEEL="panopticapi-lite==0.2.0"

if ! "$PY" -c "pass" >/dev/null 2>&1; then
    echo "install_detectron2.sh: '$PY' is not a Python interpreter that runs" >&2
    exit 2
fi
if "$PY" -m pip --version >/dev/null 2>&1; then
    install() { "$PY" -m pip install -q --disable-pip-version-check --prefer-binary "$@"; }
    download() { "$PY" -m pip download -q --disable-pip-version-check "$@"; }
elif command -v uv >/dev/null 2>&1; then
    install() { uv pip install -q --python "$PY" "$@"; }  # uv prefers wheels already
    # uv has no download command; any pip can fetch a wheel file
    download() { python3 -m pip download -q --disable-pip-version-check "$@"; }
else
    echo "install_detectron2.sh: $PY has no pip and uv is not on PATH" >&2
    exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# install_without_numpy_pin WHEEL_FILE [PIP_INSTALL_ARGS...]: the wheel's requirements except numpy (and extras), then
# the wheel itself.
install_without_numpy_pin() {
    whl="$1"
    shift
    "$PY" - "$whl" > "$tmp/requires.txt" <<'EOF'
import re
import sys
import zipfile
from email.parser import Parser

with zipfile.ZipFile(sys.argv[1]) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(whl.read(name).decode("utf-8"))
for req in meta.get_all("Requires-Dist") or []:
    project = re.match(r"[A-Za-z0-9._-]+", req).group(0).lower()
    if project == "numpy" or re.search(r"\bextra\s*==", req):
        continue
    print(req)
EOF
    if [ -s "$tmp/requires.txt" ]; then
        install "$@" -r "$tmp/requires.txt"
    fi
    install --no-deps "$whl"
}

if "$PY" -c "import detectron2" 2>/dev/null; then
    echo "detectron2: using the installed $("$PY" -c 'import detectron2, os; print(detectron2.__version__, "at", os.path.dirname(detectron2.__file__))')"
else
    download --no-deps --only-binary=:all: --python-version 3.10 -d "$tmp" "$DETECTRON2_WHEEL"
    whl="$(ls "$tmp"/sal_detectron2-*.whl | head -n 1)"
    py3="$tmp/$(basename "$whl" | sed -E 's/-cp[0-9]+-none-any\.whl$/-py3-none-any.whl/')"
    mv "$whl" "$py3"
    install_without_numpy_pin "$py3" "$@"
    echo "detectron2: installed the $DETECTRON2_WHEEL republish (without its numpy<2 pin)"
fi

if "$PY" -c "import panopticapi.evaluation" 2>/dev/null; then
    echo "panopticapi: using the installed one"
else
    download --no-deps --only-binary=:all: -d "$tmp" "$PANOPTICAPI_WHEEL"
    install_without_numpy_pin "$(ls "$tmp"/panopticapi_lite-*.whl | head -n 1)" "$@"
    echo "panopticapi: installed $PANOPTICAPI_WHEEL (without its numpy<2 pin)"
fi
