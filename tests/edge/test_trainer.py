"""edge.Trainer: checkpoints (round trips, atomicity, mismatches), batches, determinism, export and
real training on scikit-learn's digits, all through the C runtime."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import edge
from converter.api import convert
from converter.builder import GraphBuilder
from edge import checkpoint as checkpoints
from edge.checkpoint import CheckpointError

REPO = pathlib.Path(__file__).resolve().parents[2]


def _loss_only_model(path, scale: float = 0.1, hidden: int = 2) -> str:
    """A model laid out like a trainable one (infer/grad/train signatures, training metadata, weight
    and optimizer variables of several shapes, a scalar learning rate) whose train step computes
    the MSE loss without updating anything: enough for the checkpoint file handling, which must
    not depend on the training ops."""
    b = GraphBuilder()
    x = b.input("x", (4, 3), dynamic_axes=(0,))
    labels = b.input("labels", (4, hidden), dynamic_axes=(0,))
    w = b.variable("dense/weights", scale * np.arange(3 * hidden, dtype=np.float32).reshape(hidden, 3))
    bias = b.variable("dense/bias", np.zeros(hidden, np.float32))
    b.variable("optimizer/dense/weights/m", np.zeros((hidden, 3), np.float32))
    b.variable("optimizer/step", np.float32(0))
    b.variable("optimizer/learning_rate", np.float32(0.01))
    y = b.FullyConnected(x, w, bias)
    b.output(y, name="y")
    d = b.Sub(y, labels)
    b.output(b.ReduceMean(b.Mul(d, d), axes=(0, 1), keepdims=False), name="loss")
    b.signature("infer", ["x"], {"y": "y"})
    b.signature("grad", ["x", "labels"], {"loss": "loss"})
    b.signature("train", ["x", "labels"], {"loss": "loss"})
    b.metadata("training.loss", "mse")
    b.metadata("training.trainable", json.dumps(["dense/weights", "dense/bias"]))
    convert(b.build(), path)
    return str(path)


@pytest.fixture
def loss_only(tmp_path):
    return _loss_only_model(tmp_path / "loss_only.edge")


def _scramble(trainer: edge.Trainer, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    for name, value in trainer.variables().items():
        trainer.set_variable(name, rng.standard_normal(value.shape).astype(value.dtype))
    return trainer.variables()


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ---- construction ----

def test_refuses_a_model_without_the_training_signatures(tmp_path):
    b = GraphBuilder()
    x = b.input("x", (1, 3))
    b.output(b.Relu(x), name="y")
    path = tmp_path / "infer_only.edge"
    convert(b.build(), path)
    with pytest.raises(edge.InvalidModelError, match=r"no signature\(s\) \['grad', 'train'\]"):
        edge.Trainer(path)


def test_reads_the_training_metadata(loss_only):
    trainer = edge.Trainer(loss_only)
    assert trainer.loss == "mse"
    assert trainer.trainable == ["dense/weights", "dense/bias"]
    assert set(trainer.variable_names) == {"dense/weights", "dense/bias", "optimizer/dense/weights/m",
                                          "optimizer/step", "optimizer/learning_rate"}
    assert trainer.fixed_batch is None


def test_learning_rate_reads_and_sets_the_variable(loss_only):
    trainer = edge.Trainer(loss_only)
    assert trainer.learning_rate == pytest.approx(0.01)
    trainer.learning_rate = 0.25
    assert trainer.get_variable("optimizer/learning_rate") == np.float32(0.25)
    with pytest.raises(edge.InvalidArgumentError, match="learning_rate"):
        trainer.learning_rate = -1.0


# ---- checkpoints ----

def test_checkpoint_round_trip_restores_every_variable(loss_only, tmp_path):
    trainer = edge.Trainer(loss_only)
    saved = _scramble(trainer, 1)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    _scramble(trainer, 2)
    trainer.load_checkpoint(tmp_path / "a.ckpt")
    _assert_same(trainer.variables(), saved)
    # A fresh trainer on the same model file loads it too, scalar variables included.
    other = edge.Trainer(loss_only)
    other.load_checkpoint(tmp_path / "a.ckpt")
    _assert_same(other.variables(), saved)
    assert other.get_variable("optimizer/step").shape == ()


def test_failed_save_leaves_the_previous_checkpoint(loss_only, tmp_path, monkeypatch):
    trainer = edge.Trainer(loss_only)
    first = _scramble(trainer, 1)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    before = path.read_bytes()
    _scramble(trainer, 2)

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    # The disk fills up after the new archive is written, before it would be made durable.
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        trainer.save_checkpoint(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss_only.edge", "model.ckpt"]
    trainer.load_checkpoint(path)
    _assert_same(trainer.variables(), first)


def test_process_killed_mid_save_leaves_the_previous_checkpoint(loss_only, tmp_path):
    path = tmp_path / "model.ckpt"
    trainer = edge.Trainer(loss_only)
    first = _scramble(trainer, 1)
    trainer.save_checkpoint(path)
    before = path.read_bytes()
    # A child process saves other values and is SIGKILLed at the worst moment: the new archive is
    # fully written to its temporary file and is being made durable, the rename not yet done.
    child = textwrap.dedent(f"""
        import os, signal, numpy as np, edge
        trainer = edge.Trainer({str(loss_only)!r})
        for name, value in trainer.variables().items():
            trainer.set_variable(name, np.full(value.shape, 7, value.dtype))
        real_fsync = os.fsync
        def fsync_then_die(fd):
            real_fsync(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        os.fsync = fsync_then_die
        trainer.save_checkpoint({str(path)!r})
        print("not reached")
    """)
    result = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == -9, result.stderr
    assert "not reached" not in result.stdout
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1  # the dead process's temporary file
    assert path.read_bytes() == before
    _scramble(trainer, 3)
    trainer.load_checkpoint(path)
    _assert_same(trainer.variables(), first)
    # The next save replaces the checkpoint and clears the dead process's temporary file.
    trainer.save_checkpoint(path)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_checkpoint_of_another_model_is_refused_and_nothing_changes(loss_only, tmp_path):
    other_path = _loss_only_model(tmp_path / "wider.edge", hidden=3)
    other = edge.Trainer(other_path)
    other.save_checkpoint(tmp_path / "wider.ckpt")
    trainer = edge.Trainer(loss_only)
    before = _scramble(trainer, 4)
    with pytest.raises(CheckpointError, match=r"variable 'dense/weights' is float32\[3, 3\] in the checkpoint, "
                                              r"float32\[2, 3\] in the model") as error:
        trainer.load_checkpoint(tmp_path / "wider.ckpt")
    assert "wider.edge" in str(error.value)
    _assert_same(trainer.variables(), before)


def test_checkpoint_missing_a_variable_is_refused_and_nothing_changes(loss_only, tmp_path):
    trainer = edge.Trainer(loss_only)
    values = _scramble(trainer, 5)
    partial = {name: value for name, value in values.items() if name != "optimizer/step"}
    partial["conv9/weights"] = np.zeros(3, np.float32)
    checkpoints.save(tmp_path / "partial.ckpt", partial)
    _scramble(trainer, 6)
    before = trainer.variables()
    with pytest.raises(CheckpointError, match=r"missing variables \['optimizer/step'\].*"
                                              r"variables the model does not have \['conv9/weights'\]"):
        trainer.load_checkpoint(tmp_path / "partial.ckpt")
    _assert_same(trainer.variables(), before)


def test_damaged_checkpoints_raise_a_checkpoint_error(loss_only, tmp_path):
    trainer = edge.Trainer(loss_only)
    trainer.save_checkpoint(tmp_path / "good.ckpt")
    data = (tmp_path / "good.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    np.savez(tmp_path / "plain.npz", weights=np.zeros(3))
    before = trainer.variables()
    for name, message in (("truncated.ckpt", "damaged"), ("text.ckpt", "damaged"),
                          ("plain.npz", "no manifest"), ("absent.ckpt", "no such file")):
        with pytest.raises(CheckpointError, match=message):
            trainer.load_checkpoint(tmp_path / name)
    _assert_same(trainer.variables(), before)


# ---- real trainable models (converter.autodiff + the C training ops) ----

from tests.fixtures import digits  # noqa: E402


@pytest.fixture(scope="module")
def digits_data():
    return digits.load_digits_split(test_fraction=0.25, seed=0)


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory):
    """A smaller digits CNN (8 and 16 channels, 32 hidden), fixed batch 16, Adam."""
    path = tmp_path_factory.mktemp("cnn") / "cnn.train.edge"
    graph = digits.digits_cnn(batch=16, channels=(8, 16), hidden=32, seed=0)
    return digits.write_trainable(graph, path, loss="cross_entropy", optimizer="adam", lr=3e-3)


@pytest.fixture(scope="module")
def dynamic_mlp(tmp_path_factory):
    """The digits MLP with a dynamic batch, SGD with momentum."""
    path = tmp_path_factory.mktemp("mlp") / "mlp.train.edge"
    return digits.write_trainable(digits.digits_mlp(batch=16, hidden=32, seed=0), path, dynamic_batch=True,
                                  loss="cross_entropy", optimizer="momentum", lr=0.05)


def _flat(x):
    return x.reshape(len(x), -1)


def test_cnn_learns_digits_well_above_chance(small_cnn, digits_data):
    x_train, y_train, x_test, y_test = digits_data
    trainer = edge.Trainer(small_cnn)
    before = trainer.evaluate(x_test, y_test)
    with pytest.warns(UserWarning, match="fixed at 16"):
        history = trainer.fit(x_train, y_train, epochs=4, validation_data=(x_test, y_test), verbose=0)
    after = trainer.evaluate(x_test, y_test)
    assert before["accuracy"] < 0.3  # untrained: about chance (0.1)
    assert after["accuracy"] > 0.85, history
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_accuracy"][-1] == pytest.approx(after["accuracy"])
    assert history["samples"] == [len(x_train) // 16 * 16] * 4
    assert history["dropped_samples"] == [len(x_train) % 16] * 4
    assert trainer.epochs_trained == 4


def test_evaluate_loss_matches_the_runtime_loss_op(small_cnn, digits_data):
    """The NumPy loss evaluate() computes agrees with the C LOSS op the grad signature runs."""
    x_train, y_train, _, _ = digits_data
    trainer = edge.Trainer(small_cnn)
    trainer.fit(x_train[:64], y_train[:64], epochs=1, verbose=0)
    batch_x, batch_y = x_train[100:116], y_train[100:116]
    metrics = trainer.evaluate(batch_x, batch_y)
    runtime_loss = trainer.interpreter.get_signature_runner("grad")(image=batch_x, labels=batch_y)["loss"]
    assert metrics["loss"] == pytest.approx(float(runtime_loss), rel=1e-5)


def test_predict_pads_a_fixed_batch_and_keeps_every_sample(small_cnn, digits_data):
    x_train = digits_data[0]
    trainer = edge.Trainer(small_cnn)
    predictions = trainer.predict(x_train[:20])
    assert predictions.shape == (20, 10)
    infer = trainer.interpreter.get_signature_runner("infer")
    np.testing.assert_array_equal(predictions[:16], infer(image=x_train[:16])["logits"])
    np.testing.assert_array_equal(predictions[16:], infer(image=x_train[4:20])["logits"][12:])


def test_fixed_batch_trains_full_batches_and_refuses_other_sizes(small_cnn, digits_data):
    x_train, y_train = digits_data[0][:40], digits_data[1][:40]
    fitted, stepped = edge.Trainer(small_cnn), edge.Trainer(small_cnn)
    with pytest.warns(UserWarning, match="last 8 of 40 samples"):
        history = fitted.fit(x_train, y_train, epochs=1, shuffle=False, verbose=0)
    assert history["samples"] == [32] and history["dropped_samples"] == [8]
    stepped.train_step(x_train[:16], y_train[:16])
    stepped.train_step(x_train[16:32], y_train[16:32])
    _assert_same(fitted.variables(), stepped.variables())
    with pytest.raises(edge.InvalidArgumentError, match="fixed batch of 16"):
        fitted.fit(x_train, y_train, batch_size=8, verbose=0)
    with pytest.raises(edge.InvalidArgumentError, match="fewer than the model's fixed batch"):
        fitted.fit(x_train[:10], y_train[:10], verbose=0)


def test_dynamic_batch_trains_the_last_partial_batch(dynamic_mlp, digits_data):
    x, y = _flat(digits_data[0][:37]), digits_data[1][:37]
    fitted, stepped = edge.Trainer(dynamic_mlp), edge.Trainer(dynamic_mlp)
    assert fitted.fixed_batch is None
    history = fitted.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert history["samples"] == [37] and history["dropped_samples"] == [0]
    for start in (0, 16, 32):
        stepped.train_step(x[start:start + 16], y[start:start + 16])
    _assert_same(fitted.variables(), stepped.variables())
    # The two full batches alone give other weights: the 5-sample step did run.
    two_steps = edge.Trainer(dynamic_mlp)
    two_steps.train_step(x[:16], y[:16])
    two_steps.train_step(x[16:32], y[16:32])
    assert not np.array_equal(two_steps.get_variable("head/weights"), fitted.get_variable("head/weights"))


def test_training_is_deterministic_for_a_seed_and_thread_count(small_cnn, digits_data):
    x_train, y_train = digits_data[0][:256], digits_data[1][:256]
    runs = []
    for seed in (7, 7, 8):
        trainer = edge.Trainer(small_cnn, num_threads=2)
        trainer.fit(x_train, y_train, epochs=2, seed=seed, verbose=0)
        runs.append(trainer.variables())
    _assert_same(runs[0], runs[1])
    assert not np.array_equal(runs[0]["conv1/weights"], runs[2]["conv1/weights"])  # the seed matters


def test_checkpoint_resumes_training_exactly(small_cnn, digits_data, tmp_path):
    """Adam's slots and step travel with the checkpoint: resuming from it gives the same weights,
    bit for bit, as training on without stopping."""
    x_train, y_train = digits_data[0][:128], digits_data[1][:128]
    straight = edge.Trainer(small_cnn)
    straight.fit(x_train, y_train, epochs=1, seed=1, verbose=0)
    straight.save_checkpoint(tmp_path / "epoch1.ckpt")
    assert straight.get_variable("optimizer/conv1/weights/step") == 8
    straight.fit(x_train, y_train, epochs=1, seed=2, verbose=0)

    resumed = edge.Trainer(small_cnn)
    resumed.load_checkpoint(tmp_path / "epoch1.ckpt")
    assert resumed.epochs_trained == 1
    resumed.fit(x_train, y_train, epochs=1, seed=2, verbose=0)
    _assert_same(resumed.variables(), straight.variables())


def test_learning_rate_zero_leaves_the_weights(dynamic_mlp, digits_data):
    x, y = _flat(digits_data[0][:64]), digits_data[1][:64]
    trainer = edge.Trainer(dynamic_mlp)
    initial = trainer.weights()
    trainer.learning_rate = 0.0
    trainer.fit(x, y, batch_size=16, epochs=1, verbose=0)
    _assert_same(trainer.weights(), initial)
    trainer.learning_rate = 0.05
    trainer.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not np.array_equal(trainer.get_variable("head/weights"), initial["head/weights"])


def test_export_writes_the_trained_weights(small_cnn, digits_data, tmp_path):
    x_train, y_train, x_test, _ = digits_data
    trainer = edge.Trainer(small_cnn)
    trainer.fit(x_train[:160], y_train[:160], epochs=1, verbose=0)
    trainer.export(tmp_path / "trained.edge")
    exported = edge.Interpreter(model_path=tmp_path / "trained.edge")
    logits = exported.get_signature_runner("infer")(image=x_test[:16])["logits"]
    np.testing.assert_array_equal(logits, trainer.predict(x_test[:16]))
    # The trained values are the exported file's initial values, optimizer state included.
    reopened = edge.Trainer(tmp_path / "trained.edge")
    _assert_same(reopened.variables(), trainer.variables())
    untrained = edge.Trainer(small_cnn)
    assert not np.array_equal(untrained.predict(x_test[:16]), logits)
    # A plain invoke (what an app using only the TFLite-style API does) runs inference: the same
    # logits, and no backward or optimizer op touches the weights.
    exported.allocate_tensors()
    image = next(d for d in exported.get_input_details() if d["name"] == "image")
    exported.set_tensor(image["index"], x_test[:16])
    before = {d["name"]: exported.get_tensor(d["index"]) for d in exported.get_tensor_details()
              if d["name"] in reopened.variables()}
    exported.invoke()
    np.testing.assert_array_equal(exported.get_tensor(exported.get_output_details()[0]["index"]), logits)
    for d in exported.get_tensor_details():
        if d["name"] in before:
            np.testing.assert_array_equal(exported.get_tensor(d["index"]), before[d["name"]])


def test_fit_rejects_bad_labels(small_cnn, digits_data):
    x_train, y_train = digits_data[0][:32], digits_data[1][:32].copy()
    trainer = edge.Trainer(small_cnn)
    y_train[5] = 10
    with pytest.raises(edge.InvalidArgumentError, match="class id 10 is out of range for 10 classes"):
        trainer.fit(x_train, y_train, verbose=0)
    with pytest.raises(edge.InvalidArgumentError, match=r"labels: expected shape \[32\]"):
        trainer.fit(x_train, y_train[:31], verbose=0)
    with pytest.raises(edge.InvalidArgumentError, match=r"input 'image': expected samples of shape \[8, 8, 1\]"):
        trainer.fit(x_train.reshape(32, 64), y_train, verbose=0)


def test_progress_line_per_epoch(dynamic_mlp, digits_data, capsys):
    x, y = _flat(digits_data[0][:64]), digits_data[1][:64]
    trainer = edge.Trainer(dynamic_mlp)
    trainer.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1 (1/2)") and "val_accuracy" in lines[0] and "samples/s" in lines[0]


def test_edge_train_command_resumes_from_its_checkpoint(dynamic_mlp, digits_data, tmp_path, capsys):
    from edge.cli import main

    x, y = _flat(digits_data[0][:96]), digits_data[1][:96]
    np.savez(tmp_path / "data.npz", x=x, y=y)
    common = ["train", dynamic_mlp, "--data", str(tmp_path / "data.npz"), "--batch-size", "16", "--validation",
              str(tmp_path / "data.npz")]
    assert main([*common, "--epochs", "2", "--checkpoint", str(tmp_path / "straight.ckpt"),
                 "--export", str(tmp_path / "trained.edge")]) == 0
    assert main([*common, "--epochs", "1", "--checkpoint", str(tmp_path / "resumed.ckpt")]) == 0
    assert main([*common, "--epochs", "1", "--checkpoint", str(tmp_path / "resumed.ckpt"), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "val_accuracy" in out
    straight, resumed = checkpoints.load(tmp_path / "straight.ckpt"), checkpoints.load(tmp_path / "resumed.ckpt")
    _assert_same(straight.variables, resumed.variables)
    assert resumed.info["epochs_trained"] == 2
    _assert_same(edge.Trainer(tmp_path / "trained.edge").variables(), straight.variables)
    assert main(["train", dynamic_mlp, "--data", str(tmp_path / "missing.npz")]) == 2
    assert "no such file" in capsys.readouterr().err
