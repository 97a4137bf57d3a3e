# One-command setup: `make test` or `make demo` on a fresh machine creates .venv/, installs everything, builds the op.
# Re-running when everything is in place only checks time stamps under .stamps/.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMPS := .stamps
OP_SOURCES := $(wildcard oneformer/ops/csrc/*.h oneformer/ops/csrc/*.cpp oneformer/ops/csrc/cpu/*.h oneformer/ops/csrc/cpu/*.cpp oneformer/ops/csrc/cuda/*.cu)
PYTEST_ARGS ?=

.PHONY: setup test demo benchmark cuda-build-check clean

setup: $(STAMPS)/package

# The venv sees the base interpreter's packages only when that interpreter already has detectron2, so a detectron2
# built from its repository is reused instead of replaced.
$(STAMPS)/venv:
	@mkdir -p $(STAMPS)
	@if [ ! -x $(PY) ]; then \
		if $(PYTHON) -c "import detectron2" 2>/dev/null; then \
			echo "$(PYTHON) has detectron2: creating $(VENV) with --system-site-packages"; \
			$(PYTHON) -m venv --system-site-packages $(VENV); \
		else \
			$(PYTHON) -m venv $(VENV); \
		fi; \
	fi
	@touch $@

$(STAMPS)/torch: $(STAMPS)/venv
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	@touch $@

$(STAMPS)/deps: $(STAMPS)/torch requirements.txt requirements-test.txt tools/install_detectron2.sh
	sh tools/install_detectron2.sh $(PY)
	$(PY) -m pip install -q --disable-pip-version-check --prefer-binary -r requirements.txt -r requirements-test.txt
	@touch $@

# Editable install; compiles oneformer.ops._C in place (CPU kernels; CUDA ones too where a toolkit and a GPU exist).
$(STAMPS)/package: $(STAMPS)/deps setup.py pyproject.toml $(OP_SOURCES)
	@rm -f oneformer/ops/_C.cpython-*.so  # a build of the earlier pybind11 module would shadow the abi3 library
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	@$(PY) -c "from oneformer.ops import extension_status as s; st = s(); assert st['built'], st; print('oneformer.ops._C:', st)"
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
	cp -r setup.py pyproject.toml oneformer build/cuda-check/
	find build/cuda-check -name '_C*.so' -delete
	cd build/cuda-check && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-9.0}" ../../$(PY) setup.py -q build_ext --inplace
	cd build/cuda-check && ../../$(PY) -c "from oneformer.ops import extension_status as s; st = s(); assert st['cuda'], st; print('CUDA build OK:', st)"

clean:
	rm -rf build $(STAMPS) oneformer/ops/_C*.so *.egg-info
