"""Pipeline stages (converter.autodiff.stages) against the whole model's own signatures: the
stages' backward passes chained by hand give the whole model's gradients, and their updates the
whole model's train step; the C runtime runs each stage file like the reference executor."""
from __future__ import annotations

import json

import numpy as np
import pytest

from converter.autodiff import TrainingConfig, make_trainable
from converter.autodiff.stages import make_stages
from converter.errors import ConversionError
from converter.reference import run_signature
from converter.writer import write_model
from tests.fixtures.pipeline import residual_mlp

RNG = np.random.default_rng(23)


FEEDS = {"x": RNG.standard_normal((4, 6)).astype(np.float32), "labels": np.array([0, 2, 1, 2], np.int32)}


def chain(stages, feeds, run):
    """Forward through the stages, backward from the last: (loss, grads by name, input grads).
    Each backward gets what its signature asks for: the stage's inputs, and what its forward saved
    when the stages were made without recomputation."""
    acts, saved = [{"x": feeds["x"]}], []
    for stage in stages[:-1]:
        out = run(stage, "forward", acts[-1])
        saved.append({key: v for key, v in out.items() if key.startswith("saved/")})
        acts.append({key: v for key, v in out.items() if not key.startswith("saved/")})
    saved.append({})

    def backward(k, given):
        pool = {**acts[k], **saved[k], **given}
        return run(stages[k], "backward", {key: pool[key] for key in stages[k].signatures["backward"].inputs})

    out = backward(len(stages) - 1, {"labels": feeds["labels"]})
    loss, grads = out.pop("loss"), {}
    for k in range(len(stages) - 1, -1, -1):
        upstream = {key[len("grad/"):]: v for key, v in out.items() if key[len("grad/"):] in acts[k]}
        grads.update({key: v for key, v in out.items() if key[len("grad/"):] not in acts[k]})
        if k == 0:
            return loss, grads, upstream
        out = backward(k - 1, {f"grad_in/{t}": g for t, g in upstream.items()})


def reference(stage, key, feeds):
    return run_signature(stage, key, feeds)[0]


def close(a, b, tol=2e-5):
    return np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-3) < tol


CUTS = {"two": [["s"]], "three": [["h1"], ["s"]], "skip": [["h2", "h1"], ["s"]]}


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("cuts", sorted(CUTS))
def test_chained_stage_gradients_are_the_whole_models(cuts, recompute):
    graph, names = residual_mlp()
    cut_tensors = [[names[t] for t in cut] for cut in CUTS[cuts]]
    stages = make_stages(graph, cut_tensors, optimizer="adam", lr=0.01, recompute=recompute)
    whole = make_trainable(graph, optimizer="adam", lr=0.01)
    expected, _ = run_signature(whole, "grad", FEEDS)
    loss, grads, _ = chain(stages, FEEDS, reference)
    assert close(loss, expected["loss"])
    assert sorted(grads) == sorted(k for k in expected if k != "loss")
    for key, value in grads.items():
        assert close(value, expected[key]), key


def test_stage_updates_are_the_whole_models_train_step():
    graph, names = residual_mlp()
    stages = make_stages(graph, [[names["h1"]], [names["s"]]], optimizer="adam", lr=0.05)
    whole = make_trainable(graph, optimizer="adam", lr=0.05)
    for _ in range(2):  # the second step reads the Adam slots the first wrote
        _, grads, _ = chain(stages, FEEDS, reference)
        updated = []
        for stage in stages:
            feeds = {key: grads[key] for key in stage.signatures["update"].inputs}
            _, variables = run_signature(stage, "update", feeds)
            updated.append(stage.replace(constants={**stage.constants, **variables}))
        stages = updated
        _, variables = run_signature(whole, "train", FEEDS)
        whole = whole.replace(constants={**whole.constants, **variables})
    for stage in stages:
        for name in stage.variables:
            if name.startswith("optimizer/learning_rate"):
                continue
            assert close(stage.constants[name], whole.constants[name]), name


def test_without_recompute_backward_reads_the_saved_activations_instead_of_running_forward():
    graph, names = residual_mlp()
    stages = make_stages(graph, [[names["h1"]], [names["s"]]], optimizer="sgd", lr=0.1, recompute=False)
    for stage in stages[:-1]:
        forward, backward = stage.signatures["forward"], stage.signatures["backward"]
        assert not set(forward.nodes) & set(backward.nodes)
        saved = [key for key in forward.outputs if key.startswith("saved/")]
        assert saved and set(saved) <= set(backward.inputs)
    # the saved activations are what backward computes from: changing one changes the gradients
    acts = run_signature(stages[0], "forward", {"x": FEEDS["x"]})[0]
    feeds = {key: acts[key] if key in acts else FEEDS["x"] for key in stages[0].signatures["backward"].inputs
             if not key.startswith("grad_in/")}
    feeds.update({key: np.ones_like(acts[key[len("grad_in/"):]]) for key in stages[0].signatures["backward"].inputs
                  if key.startswith("grad_in/")})
    plain = run_signature(stages[0], "backward", feeds)[0]
    victim = next(key for key in feeds if key.startswith("saved/"))
    changed = run_signature(stages[0], "backward", {**feeds, victim: feeds[victim] * 2 + 1})[0]
    assert any(not np.allclose(plain[key], changed[key]) for key in plain)


@pytest.mark.parametrize("recompute", [True, False])
def test_the_runtime_runs_the_stages_like_the_reference(recompute):
    edge = pytest.importorskip("edge")
    graph, names = residual_mlp()
    stages = make_stages(graph, [[names["h2"], names["h1"]], [names["s"]]], optimizer="momentum", lr=0.1,
                         recompute=recompute)
    interpreters = {id(s): edge.Interpreter(model_content=write_model(s)) for s in stages}

    def runtime(stage, key, feeds):
        return dict(interpreters[id(stage)].get_signature_runner(key)(**feeds))

    loss, grads, inputs = chain(stages, FEEDS, runtime)
    want_loss, want, want_inputs = chain(stages, FEEDS, reference)
    assert close(loss, want_loss)
    for key in want:
        assert close(grads[key], want[key]), key
    assert close(inputs["x"], want_inputs["x"])
    for stage in stages:
        interpreter = interpreters[id(stage)]
        interpreter.get_signature_runner("update")(**{key: grads[key] for key in stage.signatures["update"].inputs})
        _, variables = run_signature(stage, "update", {key: want[key] for key in stage.signatures["update"].inputs})
        index = {d["name"]: d["index"] for d in interpreter.get_tensor_details()}
        checked = 0
        for name, value in variables.items():
            if not name.startswith("optimizer/learning_rate"):
                assert close(interpreter.get_tensor(index[name]), value), name
                checked += 1
        assert checked >= 2 * len(json.loads(stage.metadata["training.trainable"]))


def test_what_stages_refuse():
    graph, names = residual_mlp()
    with pytest.raises(ConversionError, match="add them to the cut"):
        make_stages(graph, [[names["h2"]]])  # the skip connection needs h1 after the cut too
    with pytest.raises(ConversionError, match="clip_norm"):
        make_stages(graph, [[names["s"]]], TrainingConfig(clip_norm=1.0))
    with pytest.raises(ConversionError, match="not computed tensors"):
        make_stages(graph, [["nope"]])
