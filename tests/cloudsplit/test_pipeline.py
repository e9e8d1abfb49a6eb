"""Pipeline-parallel training on Ray actors against single-process training of the whole model."""
from __future__ import annotations

import numpy as np
import pytest

from cloudsplit import pipeline
from tests.fixtures.pipeline import cuts, residual_mlp

ray = pytest.importorskip("cloudsplit.training").import_ray()
edge = pytest.importorskip("edge")

pytestmark = pytest.mark.xdist_group("ray")

MICRO, M, STEPS = 4, 4, 10


@pytest.fixture(scope="module")
def cluster():
    from cloudsplit import training

    training.ensure_ray(None, num_cpus=4)
    yield ray
    ray.shutdown()


def batches(steps: int, batch: int):
    rng = np.random.default_rng(7)
    return [(rng.standard_normal((batch, 6)).astype(np.float32), rng.integers(0, 3, batch).astype(np.int32))
            for _ in range(steps)]


@pytest.mark.parametrize("kind", pipeline.SCHEDULES)
@pytest.mark.parametrize("stages,micro", [(2, 4), (4, 4), (4, 2), (3, 6)])
def test_schedules_run_each_micro_batch_once_and_cap_what_is_in_flight(kind, stages, micro):
    order = pipeline.schedule(kind, stages, micro)
    for s, ops in enumerate(order):
        assert sorted(ops) == sorted([("F", i) for i in range(micro)] + [("B", i) for i in range(micro)])
        in_flight = peak = 0
        for op, i in ops:
            assert op == "F" or ("F", i) in ops[:ops.index((op, i))]
            in_flight += 1 if op == "F" else -1
            peak = max(peak, in_flight)
        assert peak == (micro if kind == "gpipe" else min(stages - s, micro))


@pytest.mark.parametrize("kind,stages,replicas,recompute",
                         [(kind, stages, 1, recompute) for kind in pipeline.SCHEDULES for stages in (2, 4)
                          for recompute in (True, False)] + [("1f1b", 2, 2, True)])
def test_pipeline_trains_like_one_process(cluster, kind, stages, replicas, recompute):
    from converter.autodiff import make_trainable
    from converter.autodiff.stages import stage_files
    from converter.writer import write_model

    graph, names = residual_mlp(batch=MICRO)
    files = stage_files(graph, cuts(names, stages), optimizer="adam", lr=0.05, recompute=recompute)
    whole_graph, _ = residual_mlp(batch=MICRO * M * replicas)
    whole = edge.Interpreter(model_content=write_model(make_trainable(whole_graph, optimizer="adam", lr=0.05)))
    train = whole.get_signature_runner("train")
    with pipeline.PipelineTrainer(files, micro_batches=M, schedule=kind, replicas=replicas) as trainer:
        for x, y in batches(STEPS, MICRO * M * replicas):
            loss = trainer.step({"x": x}, y)
            want = float(train(x=x, labels=y)["loss"])
            assert loss == pytest.approx(want, rel=1e-5, abs=1e-6)
        got = {k: v for stage in trainer.variables() for k, v in stage.items()
               if not k.startswith("optimizer/learning_rate")}
        stats = trainer.stats()
        for r in range(1, replicas):  # every replica applied the same updates
            for mine, first in zip(trainer.variables(r), trainer.variables(0)):
                for name in first:
                    np.testing.assert_array_equal(mine[name], first[name], err_msg=name)
    details = {d["name"]: d["index"] for d in whole.get_tensor_details()}
    assert len(got) >= 3 * 8  # 8 parameters, each with Adam's m and v
    for name, value in got.items():
        reference = whole.get_tensor(details[name])
        assert np.max(np.abs(value - reference)) <= 1e-5 * max(1.0, float(np.max(np.abs(reference)))), name
    assert all(s["steps"] == STEPS for s in stats)
    # stage 0 keeps x [MICRO, 6] float32 per micro-batch in flight, and without recomputation the
    # activations its backward reads as well
    per_micro = MICRO * 6 * 4
    in_flight = M if kind == "gpipe" else min(stages, M)
    if recompute:
        assert stats[0]["peak_kept_bytes"] == per_micro * in_flight
    else:
        assert stats[0]["peak_kept_bytes"] > per_micro * in_flight
        assert stats[0]["peak_kept_bytes"] % in_flight == 0


def test_bad_batches_are_refused(cluster):
    from converter.autodiff.stages import stage_files

    graph, names = residual_mlp(batch=MICRO)
    files = stage_files(graph, cuts(names, 2), optimizer="sgd", lr=0.1)
    with pytest.raises(ValueError, match="schedule must be one of"):
        pipeline.PipelineTrainer(files, micro_batches=2, schedule="zigzag")
    with pipeline.PipelineTrainer(files, micro_batches=2) as trainer:
        x, y = batches(1, 8)[0]
        before = trainer.variables()
        with pytest.raises(ValueError, match="does not split into 2 equal micro-batches"):
            trainer.step({"x": x[:7]}, y[:7])
        with pytest.raises(Exception, match=r"shape \[4, 7\]"):  # the stage's own message, through Ray
            trainer.step({"x": np.zeros((8, 7), np.float32)}, y)
        for stage_before, stage_after in zip(before, trainer.variables()):
            for name, value in stage_before.items():
                np.testing.assert_array_equal(stage_after[name], value)
        trainer.step({"x": x}, y)  # the next good batch trains
        assert [s["steps"] for s in trainer.stats()] == [1, 1]


@pytest.mark.parametrize("when", ["between steps", "mid-step"])
def test_a_killed_stage_restarts_from_its_checkpoint(cluster, tmp_path, when):
    import threading

    from converter.autodiff.stages import stage_files

    graph, names = residual_mlp(batch=MICRO)
    files = stage_files(graph, cuts(names, 4), optimizer="adam", lr=0.05)
    data = batches(6, MICRO * M)
    with pipeline.PipelineTrainer(files, micro_batches=M, schedule="1f1b") as plain:
        for x, y in data:
            plain.step({"x": x}, y)
        want = plain.variables()
    delay = (0.02, 0.02)  # slow enough that a kill lands inside a step
    with pipeline.PipelineTrainer(files, micro_batches=M, schedule="1f1b", checkpoint_dir=str(tmp_path),
                                  delay_s=delay) as trainer:
        for n, (x, y) in enumerate(data):
            if n == 3:
                if when == "between steps":
                    ray.kill(trainer.actors[2], no_restart=False)
                else:
                    threading.Timer(0.15, ray.kill, (trainer.actors[2],), {"no_restart": False}).start()
            trainer.step({"x": x}, y)
        got = trainer.variables()
        stats = trainer.stats()
        assert trainer.recoveries == 1
    assert [s["steps"] for s in stats] == [6] * 4  # no stage applied a batch twice
    for stage_got, stage_want in zip(got, want):
        for name, value in stage_want.items():
            np.testing.assert_array_equal(stage_got[name], value, err_msg=name)


def test_a_model_over_one_workers_memory_trains_across_stages(cluster):
    from converter.autodiff.stages import stage_files

    graph, names = residual_mlp(batch=MICRO)
    data = batches(2, MICRO * M)
    whole = stage_files(graph, [], optimizer="adam", lr=0.05)
    with pipeline.PipelineTrainer(whole, micro_batches=M) as one:
        one.step({"x": data[0][0]}, data[0][1])
        whole_bytes = one.stats()[0]["memory_bytes"]
    files = stage_files(graph, cuts(names, 4), optimizer="adam", lr=0.05)
    with pipeline.PipelineTrainer(files, micro_batches=M) as probe:
        probe.step({"x": data[0][0]}, data[0][1])
        largest = max(s["memory_bytes"] for s in probe.stats())
    limit = (largest + whole_bytes) // 2
    assert largest <= limit < whole_bytes  # the whole model does not fit one worker
    with pipeline.PipelineTrainer(whole, micro_batches=M, memory_limit=limit) as one:
        with pytest.raises(MemoryError, match=f"stage 0 holds {whole_bytes} bytes"):
            one.step({"x": data[0][0]}, data[0][1])
    with pipeline.PipelineTrainer(files, micro_batches=M, memory_limit=limit) as four:
        for x, y in data:
            four.step({"x": x}, y)
        assert all(s["memory_bytes"] <= limit for s in four.stats())


def test_serving_through_the_stages_uses_the_trained_weights(cluster):
    from converter.autodiff import make_trainable
    from converter.autodiff.stages import stage_files
    from converter.writer import write_model

    graph, names = residual_mlp(batch=MICRO)
    files = stage_files(graph, cuts(names, 3), optimizer="momentum", lr=0.1)
    whole_graph, _ = residual_mlp(batch=MICRO * M)
    whole = edge.Interpreter(model_content=write_model(make_trainable(whole_graph, optimizer="momentum", lr=0.1)))
    infer, train = whole.get_signature_runner("infer"), whole.get_signature_runner("train")
    x = np.random.default_rng(3).standard_normal((MICRO * M, 6)).astype(np.float32)
    with pipeline.PipelineTrainer(files, micro_batches=M) as trainer:
        for step in range(3):
            got = trainer.predict({"x": x})["probs"]
            want = infer(x=x)["probs"]
            assert got.shape == want.shape == (MICRO * M, 3)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
            xb, yb = batches(step + 1, MICRO * M)[step]
            trainer.step({"x": xb}, yb)
            train(x=xb, labels=yb)
        with pytest.raises(ValueError, match="a multiple of 4"):
            trainer.predict({"x": x[:6]})
