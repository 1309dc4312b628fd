"""Build softhist, with its native CPU kernels (csrc/) where torch and a C++ compiler are present.

The kernels use only the LibTorch stable ABI (``TORCH_TARGET_VERSION`` 2.10) and CPython's limited
API, so one build loads in every torch >= 2.10 and every CPython >= 3.9. They are compiled against
the torch already installed: install with ``pip install --no-build-isolation .`` (or ``-e .``),
otherwise pip builds in an isolated environment that first downloads a second torch.

Without torch at build time, without a compiler, or with ``SOFTHIST_NO_EXTENSION=1``, softhist is
installed without the kernels and runs on its torch engine (``softhist.native_status()`` says why).
"""

import glob
import os
import sys

from setuptools import setup

STABLE_ABI = "0x020a000000000000"  # torch 2.10: stable parallel_for, int[]/float[] and Tensor? arguments


def native_build():
    if os.environ.get("SOFTHIST_NO_EXTENSION"):
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print("softhist: torch is not importable at build time, building without the native CPU kernels "
              "(install torch first, then `pip install --no-build-isolation .`)")
        return {}
    class OptionalBuildExtension(BuildExtension):
        """A failed build (no compiler, unsupported platform) installs softhist without its kernels."""

        def build_extensions(self):
            try:
                super().build_extensions()
            except Exception as error:  # noqa: BLE001 - any failure: the torch engine still works
                for ext in self.extensions:  # a library left from an earlier build would load stale kernels
                    for stale in (self.get_ext_fullpath(ext.name), os.path.join("src", self.get_ext_filename(ext.name))):
                        if os.path.exists(stale):
                            os.remove(stale)
                banner = "=" * 78
                message = (f"{banner}\nWARNING: softhist's native CPU kernels could not be built\n"
                           f"  ({type(error).__name__}: {error}).\n"
                           "  softhist is installed without them and runs on its torch engine (slower);\n"
                           "  softhist.backends()['cpp'] says why. Rerun pip with -v to see the compiler's output.\n"
                           f"{banner}")
                print(message)
                print(message, file=sys.stderr)

    extension = CppExtension(
        "softhist._C",
        sorted(glob.glob("csrc/*.cpp")),
        # -fno-trapping-math: no code here relies on floating-point traps, and without it GCC keeps
        # floor() and compare-and-select loops scalar. Results are unchanged (unlike -ffast-math).
        extra_compile_args=["-O3", "-std=c++17", "-fopenmp-simd", "-fno-trapping-math", f"-DTORCH_TARGET_VERSION={STABLE_ABI}"],
        py_limited_api=True,
        optional=True,  # a failed compile installs softhist without the kernels
    )
    return {
        "ext_modules": [extension],
        "cmdclass": {"build_ext": OptionalBuildExtension.with_options(no_python_abi_suffix=True)},
        "options": {"bdist_wheel": {"py_limited_api": "cp39"}},
    }


setup(**native_build())
