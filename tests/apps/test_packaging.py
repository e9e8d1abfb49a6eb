"""Packaging for phones, checked here: ``edge`` imports and runs a model under ``python -OO`` with
pycparser (and cffi's Python part) unavailable, from the ahead-of-time ABI-mode module that
cruntime/generate_ffi.py writes; the Android spec and recipe are well formed."""
from __future__ import annotations

import configparser
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

# Run under -OO in a copy of the device packages: nothing may parse C, so the Python parts of
# cffi and pycparser are made unimportable before edge is imported.
DEVICE_SCRIPT = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pycparser", "cffi"):
            raise ImportError(f"{name} is blocked: nothing may parse C at run time")
        return None
sys.meta_path.insert(0, Block())
assert sys.flags.optimize == 2 and Block.__doc__ is None
import numpy as np
import edge
from cruntime import binding
interpreter = edge.Interpreter(model_path=sys.argv[1])
interpreter.allocate_tensors()
x = np.load(sys.argv[2])
interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
interpreter.invoke()
np.save(sys.argv[3], interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
print("ffi:", "generated" if "cruntime._edge_ffi" in sys.modules else "parsed")
"""


@pytest.fixture(scope="module")
def device_tree(tmp_path_factory):
    """edge + cruntime's Python files and header (what an app bundles) in a fresh folder, with
    the generated module written there by the generator."""
    from cruntime.generate_ffi import generate

    root = tmp_path_factory.mktemp("device-packages")
    for package in ("edge", "cruntime"):
        (root / package).mkdir()
        for source in (REPO / package).glob("*.py"):
            if source.name != "_edge_ffi.py":
                shutil.copy(source, root / package / source.name)
    (root / "cruntime" / "include").mkdir()
    shutil.copy(REPO / "cruntime" / "include" / "edge.h", root / "cruntime" / "include" / "edge.h")
    generate(root / "cruntime" / "_edge_ffi.py", header=root / "cruntime" / "include" / "edge.h")
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from converter.api import convert
    from converter.builder import GraphBuilder

    rng = np.random.default_rng(0)
    b = GraphBuilder("tiny")
    x = b.input("x", (2, 8))
    w = b.constant("fc/weights", rng.standard_normal((4, 8)).astype(np.float32))
    bias = b.constant("fc/bias", rng.standard_normal(4).astype(np.float32))
    b.output(b.Relu(b.FullyConnected(x, w, bias)), name="y")
    folder = tmp_path_factory.mktemp("tiny")
    convert(b.build(), output_path=str(folder / "tiny.edge"))
    data = rng.standard_normal((2, 8)).astype(np.float32)
    np.save(folder / "x.npy", data)
    return folder, (2, 4)


def _run_device(tree, model_folder, tmp_path):
    import cruntime.binding

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree), "EDGE_LIBRARY": str(cruntime.binding.library_path()),
           "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(tmp_path)}
    out = tmp_path / "y.npy"
    done = subprocess.run([sys.executable, "-OO", "-c", DEVICE_SCRIPT, str(model_folder / "tiny.edge"),
                           str(model_folder / "x.npy"), str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    return done, out


def test_edge_runs_under_OO_without_pycparser(device_tree, tiny_model, tmp_path):
    import edge

    folder, shape = tiny_model
    done, out = _run_device(device_tree, folder, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ffi: generated" in done.stdout
    interpreter = edge.Interpreter(model_path=str(folder / "tiny.edge"))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.load(folder / "x.npy"))
    interpreter.invoke()
    expected = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert np.load(out).shape == shape
    np.testing.assert_array_equal(np.load(out), expected)


def test_without_the_generated_module_the_same_run_fails(device_tree, tiny_model, tmp_path):
    """The control: the blocked import really is what -OO on a phone would hit."""
    tree = tmp_path / "tree"
    shutil.copytree(device_tree, tree)
    (tree / "cruntime" / "_edge_ffi.py").unlink()
    done, _ = _run_device(tree, tiny_model[0], tmp_path)
    assert done.returncode != 0 and "blocked" in done.stderr


def test_a_changed_header_falls_back_to_parsing_it(device_tree, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(device_tree, tree)
    header = tree / "cruntime" / "include" / "edge.h"
    header.write_text(header.read_text() + "\n/* edited after generation */\n")
    script = ("import sys; import cruntime.binding as b; "
              "print('generated' if type(b.ffi).__module__ != 'cffi.api' else 'parsed')")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "parsed"


ANDROID = REPO / "apps" / "android"
SPEC_CHECK = r"""
import sys
from buildozer import Buildozer
b = Buildozer(sys.argv[1], "android")
b.check_configuration_tokens()
print("archs", b.config.getlist("app", "android.archs"), "local recipes", b.config.get("app", "p4a.local_recipes"))
"""


def _check_spec(spec: pathlib.Path, tmp_path):
    return subprocess.run([sys.executable, "-c", SPEC_CHECK, str(spec)], cwd=spec.parent, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})


def test_buildozer_accepts_the_spec(tmp_path):
    pytest.importorskip("buildozer")
    spec = tmp_path / "app" / "buildozer.spec"  # buildozer creates .buildozer/ beside the spec: not in the tree
    spec.parent.mkdir()
    shutil.copy(ANDROID / "buildozer.spec", spec)
    done = _check_spec(spec, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "archs ['arm64-v8a']" in done.stdout and "local recipes ./recipes" in done.stdout
    config = configparser.ConfigParser()
    config.read(ANDROID / "buildozer.spec")
    assert "edgesplit" in config.get("app", "requirements").split(",")
    # The control: a spec without a title is refused by the same check.
    broken = tmp_path / "broken" / "buildozer.spec"
    broken.parent.mkdir()
    broken.write_text("".join(line for line in spec.read_text().splitlines(True) if not line.startswith("title")))
    assert _check_spec(broken, tmp_path).returncode != 0


def test_p4a_lists_the_local_recipe():
    p4a = shutil.which("p4a")
    if p4a is None:
        pytest.skip("python-for-android is not installed (pip install python-for-android)")
    done = subprocess.run([p4a, "recipes", "--local-recipes", str(ANDROID / "recipes")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = [line.split() for line in done.stdout.splitlines() if line.strip().startswith("edgesplit")]
    assert listed and listed[0][1] == "0.1.0", done.stdout[-2000:]


def test_the_cross_built_library_is_aarch64(tmp_path):
    """What the recipe runs for arm64-v8a, with the Debian cross compiler instead of the NDK's."""
    compiler = shutil.which("aarch64-linux-gnu-gcc")
    if compiler is None or shutil.which("readelf") is None:
        pytest.skip("no aarch64 cross compiler (apt-get install gcc-aarch64-linux-gnu binutils)")
    build = tmp_path / "build-android"
    done = subprocess.run(["make", "-C", str(REPO / "cruntime"), f"CC={compiler}", f"BUILD={build}", "-j2", "shared"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    header = subprocess.run(["readelf", "-h", str(build / "libedge.so")], capture_output=True, text=True).stdout
    assert "AArch64" in header and "DYN" in header, header
