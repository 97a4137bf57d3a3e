"""Build OneFormer's compiled extension (the package's metadata and dependency ranges are in pyproject.toml).

The multi-scale deformable attention op is compiled as the extension ``oneformer.ops._C``, a library that registers
the PyTorch operators ``torch.ops.oneformer.ms_deform_attn`` / ``ms_deform_attn_backward`` when it is imported:
- always with the C++ CPU kernels;
- with the CUDA kernels when a CUDA toolkit is found (CUDA_HOME / CUDA_PATH, else the toolkit that holds the
  ``nvcc`` on PATH, else /usr/local/cuda) and either a GPU is visible or FORCE_CUDA=1.
Without a GPU, set TORCH_CUDA_ARCH_LIST to choose the architectures (default below).
Set ONEFORMER_NO_EXT=1 to install without compiling anything (the op then runs its PyTorch reference).
"""
import glob
import os
import re
import shutil
import subprocess

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("oneformer", "ops", "csrc")
# Used only when no GPU is visible and TORCH_CUDA_ARCH_LIST is unset (Turing .. Hopper, PTX for newer GPUs).
DEFAULT_CUDA_ARCHS = "7.5;8.0;8.6;8.9;9.0+PTX"
PY_LIMITED_API_HEX = "0x030A0000"  # the oldest Python supported (requires-python in pyproject.toml)


def _has_cuda_headers(home):
    return bool(home) and os.path.isfile(os.path.join(home, "include", "cuda_runtime.h"))


def find_cuda_home():
    """Return the CUDA toolkit root or None.

    torch guesses the root as the parent of ``which nvcc``; that is wrong when nvcc on PATH is a wrapper script
    (e.g. /usr/local/bin/nvcc exec'ing the real one), so the real location is asked from nvcc itself.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:
            return home if _has_cuda_headers(home) else None
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if _has_cuda_headers(home):
            return home
        try:
            dry = subprocess.run(
                [nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                capture_output=True, text=True, timeout=60,
            )
            match = re.search(r"^#\$ _HERE_=(.+)$", dry.stdout + dry.stderr, re.MULTILINE)
            if match:
                home = os.path.dirname(match.group(1).strip())
                if _has_cuda_headers(home):
                    return home
        except (OSError, subprocess.SubprocessError):
            pass
    return "/usr/local/cuda" if _has_cuda_headers("/usr/local/cuda") else None


def get_extensions():
    if os.environ.get("ONEFORMER_NO_EXT", "0") == "1":
        return [], {}
    cuda_home = find_cuda_home()
    if cuda_home:
        # torch.utils.cpp_extension reads CUDA_HOME when it is imported
        os.environ["CUDA_HOME"] = cuda_home
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    force_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    with_cuda = cuda_home is not None and torch.version.cuda is not None and (
        torch.cuda.is_available() or force_cuda
    )
    if force_cuda and not with_cuda:
        raise RuntimeError(
            "FORCE_CUDA=1 but the CUDA kernels cannot be built: "
            + ("no CUDA toolkit found (set CUDA_HOME)" if cuda_home is None else "this torch has no CUDA support")
        )

    sources = [os.path.join(CSRC, "vision.cpp")] + sorted(glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    # The library registers torch operators and uses only the stable Python ABI (an empty module to import), so one
    # build serves every Python >= 3.10 (PyTorch's custom C++/CUDA operator guide).
    define_macros = [("Py_LIMITED_API", PY_LIMITED_API_HEX)]
    extra_compile_args = {"cxx": ["-O3", "-fopenmp"]}
    extension = CppExtension
    if with_cuda:
        extension = CUDAExtension
        sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
        define_macros.append(("WITH_CUDA", None))
        extra_compile_args["nvcc"] = ["-O3", "--expt-relaxed-constexpr"]
        if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    print(f"oneformer: building oneformer.ops._C with {'CPU + CUDA' if with_cuda else 'CPU'} kernels"
          + (f" (CUDA_HOME={cuda_home})" if with_cuda else ""))
    ext = extension(
        "oneformer.ops._C",
        sources,
        include_dirs=[os.path.join(ROOT, CSRC)],
        define_macros=define_macros,
        extra_compile_args=extra_compile_args,
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = get_extensions()

# Everything else (name, version, Python and dependency ranges, extras, packages) is declared in pyproject.toml.
setup(
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if ext_modules else {},
)
