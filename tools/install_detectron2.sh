#!/bin/sh
# Make detectron2 importable by the given Python: keep an installed one (e.g. built from its git repository);
# otherwise install `sal-detectron2`, a PyPI republish of detectron2's main branch. That wheel is tagged cp310 but its
# Python code runs on newer Pythons (its stale compiled detectron2._C is simply not loaded), so it is installed under
# a py3 file name. It pins numpy<2.
set -eu
PY="${1:?usage: install_detectron2.sh PYTHON}"
if "$PY" -c "import detectron2" 2>/dev/null; then
    echo "detectron2: using the installed $("$PY" -c 'import detectron2, os; print(detectron2.__version__, "at", os.path.dirname(detectron2.__file__))')"
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 -d "$tmp" sal-detectron2==0.7.2
whl="$(ls "$tmp"/sal_detectron2-0.7.2-*.whl | head -n 1)"
cp "$whl" "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
"$PY" -m pip install -q "$tmp/sal_detectron2-0.7.2-py3-none-any.whl"
echo "detectron2: installed the sal-detectron2 0.7.2 republish"
