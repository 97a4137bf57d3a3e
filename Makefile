# One-command setup: `make test` or `make demo` on a fresh machine creates a venv, installs everything, builds the op.
# Re-running when everything is in place only checks time stamps (kept in the venv, under .stamps/).
#   PYTHON=python3.13     the interpreter for the venv (a name on PATH, or any version pyenv has installed)
#   VENV=.venv-py313      where the venv goes (default .venv; one venv per Python)
#   CONSTRAINTS=FILE      a pip constraints file, e.g. tools/constraints-oldest.txt (the oldest supported stack);
#                         without it pip takes the newest releases within pyproject.toml's ranges
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?=
PY := $(VENV)/bin/python
PYTHON_EXE := $(shell sh tools/find_python.sh $(PYTHON))
STAMPS := $(VENV)/.stamps
PIP := $(PY) -m pip --disable-pip-version-check
CONSTRAINT_ARGS := $(if $(CONSTRAINTS),-c $(abspath $(CONSTRAINTS)))
OP_SOURCES := $(wildcard oneformer/ops/csrc/*.h oneformer/ops/csrc/*.cpp oneformer/ops/csrc/cpu/*.h oneformer/ops/csrc/cpu/*.cpp oneformer/ops/csrc/cuda/*.cu)
# the in-place build of the op: rebuilt for this venv when another venv (another torch) built it last
OP_LIBRARY := $(wildcard oneformer/ops/_C*.so)
PYTEST_ARGS ?=

.PHONY: setup check-python test demo benchmark cuda-build-check gpu-wheels gpu-checks-dry-run clean

setup: check-python $(STAMPS)/package

# An existing venv made with another Python than the one asked for (PYTHON=... on the command line) is not reused.
check-python:
	@if [ -z "$(PYTHON_EXE)" ]; then echo "make: no Python interpreter '$(PYTHON)' found (PATH or pyenv)" >&2; exit 2; fi
	@if [ -x $(PY) ] && [ "$(origin PYTHON)" != "default" ] && [ "$(origin PYTHON)" != "file" ]; then \
		want=$$($(PYTHON_EXE) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
		have=$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
		if [ "$$want" != "$$have" ]; then \
			echo "make: $(VENV) has Python $$have, not $$want ($(PYTHON)): choose another VENV=... or remove $(VENV)" >&2; \
			exit 2; \
		fi; \
	fi

# The venv sees the base interpreter's packages only when that interpreter already has detectron2, so a detectron2
# built from its repository is reused instead of replaced.
$(STAMPS)/venv:
	@if [ ! -x $(PY) ]; then \
		if $(PYTHON_EXE) -c "import detectron2" 2>/dev/null; then \
			echo "$(PYTHON_EXE) has detectron2: creating $(VENV) with --system-site-packages"; \
			$(PYTHON_EXE) -m venv --system-site-packages $(VENV); \
		else \
			echo "creating $(VENV) with $(PYTHON_EXE)"; \
			$(PYTHON_EXE) -m venv $(VENV); \
		fi; \
	fi
	@mkdir -p $(STAMPS)
	@touch $@

# Every range (Python, torch, numpy, the rest, the extras) comes from pyproject.toml. This first install resolves and
# installs them (torch included) without compiling anything: the build of the op needs torch installed beforehand,
# and --no-build-isolation keeps pip from downloading a second torch into a build environment.
$(STAMPS)/deps: $(STAMPS)/venv pyproject.toml tools/install_detectron2.sh $(CONSTRAINTS)
	$(PIP) install -q $(CONSTRAINT_ARGS) "setuptools>=64" wheel
	ONEFORMER_NO_EXT=1 $(PIP) install -q --prefer-binary --no-build-isolation $(CONSTRAINT_ARGS) -e ".[test]"
	sh tools/install_detectron2.sh $(PY) $(CONSTRAINT_ARGS)
	@touch $@

# Editable install; compiles oneformer.ops._C in place (CPU kernels; CUDA ones too where a toolkit and a GPU exist).
$(STAMPS)/package: $(STAMPS)/deps setup.py pyproject.toml $(OP_SOURCES) $(OP_LIBRARY)
	@rm -f oneformer/ops/_C.cpython-*.so  # a build of the earlier pybind11 module would shadow the abi3 library
	$(PIP) install -q --no-build-isolation --no-deps -e .
	@$(PY) -c "from oneformer.ops import extension_status as s; st = s(); assert st['built'], st; print('oneformer.ops._C:', st)"
	@$(PY) -c "import sys, numpy, torch, cv2; print('stack: Python %d.%d.%d' % sys.version_info[:3], '| torch', torch.__version__, '| numpy', numpy.__version__, '| opencv', cv2.__version__)"
	@touch $@

# The web app's browser test (tests/demo/test_app.py) drives Debian's headless Chromium through ChromeDriver: installed
# here with apt-get when missing (as root); elsewhere the test is skipped, except under CI=true, where it fails.
$(STAMPS)/browser:
	@mkdir -p $(STAMPS)
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
		else \
			echo "note: chromium and chromedriver are missing (Debian: apt-get install chromium chromium-driver)"; \
		fi; \
	fi
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then touch $@; fi

test: setup $(STAMPS)/browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Offline: the bundled synthetic-shapes checkpoint on the bundled sample images; the three task visualizations go to
# output/demo/{panoptic,semantic,instance}/, one summary line per image is printed.
demo: setup
	$(PY) demo/demo.py --config-file configs/synthetic/oneformer_synthetic.yaml --input demo/assets/samples \
		--output output/demo --task all --device cpu

benchmark: setup
	$(PY) tools/benchmark_ms_deform_attn.py --threads 2

# Compiles the CUDA kernels in a scratch copy (FORCE_CUDA=1, no GPU needed); the in-place CPU build is untouched.
cuda-build-check: setup
	rm -rf build/cuda-check && mkdir -p build/cuda-check
	cp -r setup.py pyproject.toml README.md oneformer build/cuda-check/
	find build/cuda-check -name '_C*.so' -delete
	cd build/cuda-check && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-9.0}" $(abspath $(PY)) setup.py -q build_ext --inplace
	cd build/cuda-check && $(abspath $(PY)) -c "from oneformer.ops import extension_status as s; st = s(); assert st['cuda'], st; print('CUDA build OK:', st)"

# The wheels that tools/gpu_checks.py installs on a bare GPU machine (Python 3.12, torch and numpy preinstalled,
# nothing downloadable): resolved from pyproject.toml and detectron2's metadata by tools/gpu_wheels.py, kept out of
# git in .whl/gpu312 (carry that path to the machine). GPU_WHEELS_BUDGET_MB caps the folder (the carried paths may
# total 64 MiB); GPU_WHEELS_FIRST="scipy ..." carries those before all others.
GPU_WHEELS_BUDGET_MB ?= 48
GPU_WHEELS_FIRST ?=
gpu-wheels: setup
	$(PY) tools/gpu_wheels.py --dest .whl/gpu312 --budget-mb $(GPU_WHEELS_BUDGET_MB) $(if $(GPU_WHEELS_FIRST),--first $(GPU_WHEELS_FIRST))

# tools/gpu_checks.sh's steps on this machine's CPU (bundled synthetic model, tiny sizes); tests/tools/test_gpu_checks.py
# runs the same
gpu-checks-dry-run: setup
	PYTHON=$(abspath $(PY)) sh tools/gpu_checks.sh --dry-run

clean:
	rm -rf build $(STAMPS) .stamps oneformer/ops/_C*.so *.egg-info
