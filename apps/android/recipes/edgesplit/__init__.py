"""python-for-android recipe for edgesplit's device packages (edge, cruntime, apps).

Builds libedge.so with the project's own Makefile (cruntime/Makefile) using the NDK compiler of
the target ABI (arm64-v8a: aarch64 NEON kernels), generates the ABI-mode cffi module
(cruntime/generate_ffi.py, run by the host Python, so the device never parses C: p4a runs Python
with -OO, under which pycparser cannot), and installs the packages with the library beside them as
cruntime/_libedge.so, where cruntime.binding looks first. The source is this checkout
($EDGESPLIT_SOURCE, default: the checkout this recipe sits in), not a download.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import sys

import sh
from pythonforandroid.logger import info, shprint
from pythonforandroid.recipe import Recipe
from pythonforandroid.util import current_directory

SOURCE = pathlib.Path(os.environ.get("EDGESPLIT_SOURCE") or pathlib.Path(__file__).resolve().parents[4])
PACKAGES = ("edge", "cruntime", "apps")


class EdgesplitRecipe(Recipe):
    version = "0.1.0"
    url = None  # the local checkout is copied in unpack()
    depends = ["python3", "numpy", "cffi"]
    built_libraries = {"libedge.so": "cruntime/build-android"}

    def unpack(self, arch):
        build_dir = pathlib.Path(self.get_build_container_dir(arch)) / self.name
        if build_dir.exists():
            shutil.rmtree(build_dir)
        ignore = shutil.ignore_patterns("build", "build-*", "__pycache__", "*.so", ".git")
        build_dir.mkdir(parents=True)
        for package in PACKAGES:
            shutil.copytree(SOURCE / package, build_dir / package, ignore=ignore)

    def build_arch(self, arch):
        env = self.get_recipe_env(arch)
        build_dir = pathlib.Path(self.get_build_dir(arch.arch))
        with current_directory(str(build_dir)):
            info(f"edgesplit: building libedge.so for {arch.arch} with {env['CC'].split()[0]}")
            shprint(sh.make, "-C", "cruntime", f"CC={env['CC']}", "BUILD=build-android", "shared", _env=env)
            # The generator runs on the host (it needs pycparser); its output is plain Python.
            shprint(sh.Command(sys.executable), "-m", "cruntime.generate_ffi", _env={**os.environ,
                                                                                    "PYTHONPATH": str(build_dir)})
        self.install_packages(arch, build_dir)

    def install_packages(self, arch, build_dir: pathlib.Path) -> None:
        site = pathlib.Path(self.ctx.get_python_install_dir(arch.arch))
        for package in PACKAGES:
            target = site / package
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(build_dir / package, target,
                            ignore=shutil.ignore_patterns("src", "build*", "schema", "*.c", "Makefile", "android"))
        shutil.copy(build_dir / "cruntime" / "build-android" / "libedge.so", site / "cruntime" / "_libedge.so")


recipe = EdgesplitRecipe()
