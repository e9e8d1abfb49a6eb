"""Builds the C runtime (cruntime/Makefile, target `shared`) as the package file cruntime/_libedge<EXT_SUFFIX>.

The library is not a CPython extension: cruntime/binding.py opens it with cffi in ABI mode. It is
declared as an Extension only so that setuptools puts it where extensions go (site-packages for
`pip install .`, the source tree for `pip install -e .`) and tags the wheel as platform-specific.
Everything else lives in pyproject.toml.
"""
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).resolve().parent
NO_COMPILER = "edgesplit needs a C compiler to build its runtime: install gcc (Debian: apt-get install gcc) or set CC"


class BuildError(SystemExit):
    pass


def find_c_compiler() -> str:
    requested = os.environ.get("CC", "").strip()
    if requested:
        if shutil.which(shlex.split(requested)[0]) is None:
            raise BuildError(f"{NO_COMPILER} (CC={requested!r} is not on PATH)")
        return requested
    for candidate in ("cc", "gcc", "clang"):
        if shutil.which(candidate):
            return candidate
    raise BuildError(NO_COMPILER)


def make_jobs() -> int:
    configured = os.environ.get("EDGESPLIT_BUILD_JOBS")
    if configured:
        return max(1, int(configured))
    return max(1, min(8, os.cpu_count() or 1))


class BuildRuntime(build_ext):
    """Runs `make -C cruntime shared` into a private build dir and copies libedge.so into place."""

    def build_extension(self, ext):
        compiler = find_c_compiler()
        make = shutil.which("make")
        if make is None:
            raise BuildError("edgesplit needs `make` to build its runtime: install make (Debian: apt-get install make)")
        build_dir = pathlib.Path(self.build_temp).resolve() / "cruntime"
        build_dir.mkdir(parents=True, exist_ok=True)
        command = [make, "-C", str(ROOT / "cruntime"), f"-j{make_jobs()}", "shared",
                   f"BUILD={build_dir}", f"CC={compiler}"]
        print(" ".join(shlex.quote(part) for part in command))
        try:
            subprocess.run(command, check=True)
        except subprocess.CalledProcessError as error:
            raise BuildError(f"building the C runtime failed (exit {error.returncode}): {' '.join(command)}")
        destination = pathlib.Path(self.get_ext_fullpath(ext.name))
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(build_dir / "libedge.so", destination)
        # The cffi module generated ahead of time (ABI mode), so that importing edge parses no C:
        # python-for-android runs -OO, where pycparser cannot parse (cruntime/generate_ffi.py).
        # An editable install imports cruntime from the source tree, so it goes there too.
        targets = {destination.parent / "_edge_ffi.py"}
        if self.inplace or getattr(self, "editable_mode", False):
            targets.add(ROOT / "cruntime" / "_edge_ffi.py")
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        for generated in sorted(targets):
            command = [sys.executable, "-m", "cruntime.generate_ffi", "--out", str(generated)]
            try:
                subprocess.run(command, check=True, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL)
            except subprocess.CalledProcessError as error:
                raise BuildError(f"generating the cffi module failed (exit {error.returncode}): {' '.join(command)}")


def readme() -> str:
    path = ROOT / "README.md"
    return path.read_text(encoding="utf-8") if path.exists() else ""


setup(
    long_description=readme(),
    long_description_content_type="text/markdown",
    # sources only mark the extension as non-empty for setuptools; make does the compiling.
    ext_modules=[Extension("cruntime._libedge", sources=[])],
    cmdclass={"build_ext": BuildRuntime},
)
