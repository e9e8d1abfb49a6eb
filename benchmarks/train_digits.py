"""Training on the device, measured: a small CNN on scikit-learn's digits trained entirely by the C
runtime through edge.Trainer, side by side with PyTorch on the CPU for the same network.

    python3 benchmarks/train_digits.py --out benchmarks/results

Three parts, one run:

1. accuracy: the CNN of tests/fixtures/digits.py (conv 16 - pool - conv 32 - pool - dense 64 -
   head 10, batch 32, Adam 3e-3), converted with converter.autodiff and trained by edge.Trainer on
   75 % of the 1797 digits; test accuracy on the held-out 25 % (stratified, seed 0) after every
   epoch, and the training time (evaluation excluded) until it first reaches --target (0.97).
   PyTorch trains the same network from the same initial weights, with the same optimizer and the
   same batches in the same order, for the same number of epochs.
2. throughput: training samples/s of the fit loop (shuffle, batch gather, one optimizer step per
   batch), median of --throughput-epochs epochs, at each --threads count, for edge and PyTorch;
   each (runtime, threads) runs in its own process so no thread pool of one disturbs the other,
   in --rounds rounds taking turns; the figure is the median of the rounds.
3. personalisation: pretrain on the classes not in --new-classes, then convert the pretrained
   network again with the body frozen (--freeze conv1/ conv2/ dense/: only the head trains) and
   fine-tune it on --shots labelled samples of the new classes; accuracy on the new classes, on the
   old ones and on all, before and after.

PyTorch is optional (the benchmark, never the tests, uses it): without it the torch columns are
left out. Results: <out>/train_digits.json and <out>/train_digits.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge.measure import cpu_name  # noqa: E402
from tests.fixtures import digits  # noqa: E402

BODY = ("conv1/", "conv2/", "dense/")


def _edge_model(path, batch, args, weights=None, **training) -> str:
    graph = digits.digits_cnn(batch=batch, channels=tuple(args.channels), hidden=args.hidden, seed=args.seed,
                              weights=weights)
    config = dict(loss="cross_entropy", optimizer="adam", lr=args.lr)
    config.update(training)
    return digits.write_trainable(graph, path, **config)


def _batches(count: int, batch: int, epochs: int, seed: int):
    """The sample order of edge.Trainer.fit(shuffle=True, seed=seed) with a fixed batch: one
    permutation per epoch from one generator, the remainder dropped."""
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(count)
        yield [order[k * batch:(k + 1) * batch] for k in range(count // batch)]


# ---- PyTorch, the same network ----

def torch_network(weights: dict[str, np.ndarray], channels, hidden):
    """The digits CNN in PyTorch, starting from ``weights`` (the values the edge side starts from too)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class DigitsCNN(nn.Module):
        def __init__(self):
            super().__init__()
            c1, c2 = channels
            self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
            self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
            self.dense = nn.Linear(4 * c2, hidden)
            self.head = nn.Linear(hidden, digits.CLASSES)

        def forward(self, x):  # NCHW
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            # Flattened in NHWC order, as the edge graph's Reshape does, so the dense weights agree.
            x = x.permute(0, 2, 3, 1).flatten(1)
            return self.head(F.relu(self.dense(x)))

    model = DigitsCNN()
    with torch.no_grad():
        for layer in ("conv1", "conv2"):
            oihw = np.ascontiguousarray(weights[f"{layer}/weights"].transpose(0, 3, 1, 2))
            getattr(model, layer).weight.copy_(torch.from_numpy(oihw))
            getattr(model, layer).bias.copy_(torch.from_numpy(weights[f"{layer}/bias"]))
        for layer in ("dense", "head"):
            getattr(model, layer).weight.copy_(torch.from_numpy(weights[f"{layer}/weights"]))
            getattr(model, layer).bias.copy_(torch.from_numpy(weights[f"{layer}/bias"]))
    return model


def torch_worker(args) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = digits.load_digits_split(seed=args.seed)
    to_nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # noqa: E731
    x_train_t, x_test_t = to_nchw(x_train), to_nchw(x_test)
    y_train_t = torch.from_numpy(y_train.astype(np.int64))
    model = torch_network(digits.cnn_weights(tuple(args.channels), args.hidden, args.seed), args.channels,
                           args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    result = {"torch_version": torch.__version__, "threads": args.threads, "epochs": [],
              "samples_per_s": [], "time_s": [], "test_accuracy": []}
    for batches in _batches(len(x_train), args.batch, args.epochs, args.seed):
        model.train()
        start = time.perf_counter()
        for chosen in batches:
            index = torch.from_numpy(chosen)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_train_t[index]), y_train_t[index])
            loss.backward()
            optimizer.step()
        elapsed = time.perf_counter() - start
        samples = len(batches) * args.batch
        result["time_s"].append(elapsed)
        result["samples_per_s"].append(samples / elapsed)
        if args.evaluate:
            model.eval()
            with torch.no_grad():
                predicted = model(x_test_t).argmax(1).numpy()
            result["test_accuracy"].append(float((predicted == y_test).mean()))
    return result


# ---- edge ----

def edge_worker(args) -> dict:
    import edge

    x_train, y_train, x_test, y_test = digits.load_digits_split(seed=args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = edge.Trainer(_edge_model(pathlib.Path(scratch) / "digits.train.edge", args.batch, args),
                               num_threads=args.threads)
        history = trainer.fit(x_train, y_train, batch_size=args.batch, epochs=args.epochs, seed=args.seed,
                              validation_data=(x_test, y_test) if args.evaluate else None, verbose=0)
    return {"edge_isa": edge.runtime_isa(), "threads": args.threads, "samples_per_s": history["samples_per_s"],
            "time_s": history["time_s"], "test_accuracy": history.get("val_accuracy", []),
            "loss": history["loss"]}


WORKERS = {"edge": edge_worker, "torch": torch_worker}


def _run_worker(runtime: str, threads: int, epochs: int, evaluate: bool, args) -> dict | None:
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", runtime, "--threads", str(threads),
               "--epochs", str(epochs), "--batch", str(args.batch), "--lr", str(args.lr), "--seed", str(args.seed),
               "--hidden", str(args.hidden), "--channels", *map(str, args.channels)]
    if evaluate:
        command.append("--evaluate")
    # Every thread pool in the worker gets exactly ``threads`` threads (OpenMP's included).
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode != 0:
        print(f"{runtime} worker ({threads} threads) failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


# ---- the three parts ----

def accuracy_run(args, scratch: pathlib.Path) -> dict:
    import edge

    x_train, y_train, x_test, y_test = digits.load_digits_split(seed=args.seed)
    trainer = edge.Trainer(_edge_model(scratch / "digits.train.edge", args.batch, args), num_threads=1)
    initial = trainer.evaluate(x_test, y_test)
    start = time.perf_counter()
    history = trainer.fit(x_train, y_train, batch_size=args.batch, epochs=args.epochs, seed=args.seed,
                          validation_data=(x_test, y_test), verbose=2, stream=sys.stderr)
    wall = time.perf_counter() - start
    cumulative = np.cumsum(history["time_s"])
    reached = [k for k, accuracy in enumerate(history["val_accuracy"]) if accuracy >= args.target]
    first = reached[0] if reached else None
    trainer.export(scratch / "digits.trained.edge")
    # The exported inference model, run by a plain Interpreter on every full batch of the test set.
    exported = edge.Interpreter(model_path=scratch / "digits.trained.edge").get_signature_runner("infer")
    full = len(x_test) // args.batch * args.batch
    predicted = [exported(image=x_test[k:k + args.batch])["logits"].argmax(1) for k in range(0, full, args.batch)]
    exported_accuracy = float(np.mean(np.concatenate(predicted) == y_test[:full]))
    return {
        "train_samples": len(x_train), "test_samples": len(x_test), "initial_test_accuracy": initial["accuracy"],
        "test_accuracy": history["val_accuracy"], "test_loss": history["val_loss"], "train_loss": history["loss"],
        "epoch_train_s": history["time_s"], "final_test_accuracy": history["val_accuracy"][-1],
        "best_test_accuracy": max(history["val_accuracy"]),
        "target": args.target, "epochs_to_target": None if first is None else first + 1,
        "train_s_to_target": None if first is None else float(cumulative[first]),
        "wall_s_all_epochs_with_evaluation": wall,
        "exported_model_accuracy_on_full_batches": exported_accuracy,
    }


def personalisation_run(args, scratch: pathlib.Path) -> dict:
    import edge

    x_train, y_train, x_test, y_test = digits.load_digits_split(seed=args.seed)
    new = np.isin(y_train, args.new_classes)
    # Pretraining sees none of the new classes.
    pretrain = edge.Trainer(_edge_model(scratch / "pretrain.edge", args.batch, args), num_threads=1)
    pretrain.fit(x_train[~new], y_train[~new], batch_size=args.batch, epochs=args.pretrain_epochs, seed=args.seed,
                 verbose=0)
    pretrained = pretrain.weights()

    rng = np.random.default_rng(args.seed)
    shots = rng.choice(np.flatnonzero(new), size=args.shots, replace=False)
    test_new = np.isin(y_test, args.new_classes)
    runs = {}
    for replay in sorted({0, args.replay}):
        # A small buffer of old-class samples kept on the device from pretraining, trained on
        # alongside the new shots so the head does not forget the old classes.
        kept = rng.choice(np.flatnonzero(~new), size=replay, replace=False) if replay else np.array([], np.int64)
        chosen = np.concatenate([shots, kept])
        # Same weights, body frozen (constants), only the head trainable; one batch holds them all.
        head_only = _edge_model(scratch / f"personalise{replay}.edge", len(chosen), args, weights=pretrained,
                                freeze=BODY, lr=args.finetune_lr)
        trainer = edge.Trainer(head_only, num_threads=1)

        def accuracies() -> dict:
            correct = trainer.predict(x_test).argmax(1) == y_test
            return {"new_classes": float(correct[test_new].mean()), "old_classes": float(correct[~test_new].mean()),
                    "all": float(correct.mean())}

        before = accuracies()
        start = time.perf_counter()
        trainer.fit(x_train[chosen], y_train[chosen], batch_size=len(chosen), epochs=args.finetune_epochs,
                    seed=args.seed, verbose=0)
        runs[f"replay{replay}"] = {"replay_samples": int(replay), "finetune_s": time.perf_counter() - start,
                                   "before": before, "after": accuracies()}
    return {"new_classes": list(args.new_classes), "shots": int(args.shots),
            "shot_labels": np.bincount(y_train[shots], minlength=10).tolist(),
            "pretrain_samples": int((~new).sum()), "pretrain_epochs": args.pretrain_epochs,
            "finetune_epochs": args.finetune_epochs, "finetune_lr": args.finetune_lr,
            "trainable": trainer.trainable, "runs": runs}


def throughput_run(args) -> dict:
    """Rounds of (edge, torch) x threads, one fresh process each, taking turns so that the load of
    a shared machine falls on every configuration alike; per configuration the median over all
    rounds of each process's per-epoch samples/s."""
    runtimes = ["edge"] + (["torch"] if _torch_available() and not args.no_torch else [])
    rows: dict[str, dict] = {}
    for _ in range(args.rounds):
        for threads in args.threads:
            for runtime in runtimes:
                result = _run_worker(runtime, threads, args.throughput_epochs, False, args)
                if result is None:
                    continue
                row = rows.setdefault(f"{runtime}/{threads}", {**result, "round_medians": []})
                row["round_medians"].append(float(np.median(result["samples_per_s"])))
    for row in rows.values():
        row["median_samples_per_s"] = float(np.median(row["round_medians"]))
        row.pop("samples_per_s", None)
        row.pop("time_s", None)
    return rows


def _markdown(results: dict) -> str:
    accuracy, person, throughput = results["accuracy"], results["personalisation"], results["throughput"]
    lines = ["| runtime | threads | samples/s (median) | vs PyTorch |", "| --- | --- | --- | --- |"]
    for key, row in throughput.items():
        runtime, threads = key.split("/")
        torch_row = throughput.get(f"torch/{threads}")
        ratio = (f"{row['median_samples_per_s'] / torch_row['median_samples_per_s']:.2f}x"
                 if torch_row and runtime == "edge" else "")
        lines.append(f"| {runtime} | {threads} | {row['median_samples_per_s']:.0f} | {ratio} |")
    text = [f"Digits CNN, {results['config']}", "",
            f"edge: test accuracy {accuracy['final_test_accuracy']:.4f} after {len(accuracy['test_accuracy'])} epochs "
            f"(best {accuracy['best_test_accuracy']:.4f}); reached {accuracy['target']:.2f} at epoch "
            f"{accuracy['epochs_to_target']} after {accuracy['train_s_to_target']} s of training (1 thread).", ""]
    if results.get("torch_accuracy"):
        torch_accuracy = results["torch_accuracy"]["test_accuracy"]
        text += [f"PyTorch, same network, weights, optimizer and batches: test accuracy {torch_accuracy[-1]:.4f} "
                 f"after {len(torch_accuracy)} epochs (best {max(torch_accuracy):.4f}).", ""]
    text += lines + ["", f"Personalisation: pretrained without classes {person['new_classes']}, body frozen, head "
                         f"fine-tuned on {person['shots']} labelled samples of them ({person['finetune_epochs']} "
                         "full-batch Adam steps):", "",
                     "| fine-tuned on | new classes before -> after | old classes before -> after "
                     "| all before -> after |",
                     "| --- | --- | --- | --- |"]
    for run in person["runs"].values():
        label = f"{person['shots']} new" + (f" + {run['replay_samples']} kept old" if run["replay_samples"] else "")
        text.append(f"| {label} | " + " | ".join(f"{run['before'][k]:.4f} -> {run['after'][k]:.4f}"
                                                for k in ("new_classes", "old_classes", "all")) + " |")
    return "\n".join(text) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--target", type=float, default=0.97)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--channels", type=int, nargs=2, default=[16, 32])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--throughput-epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (processes per configuration)")
    parser.add_argument("--new-classes", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--shots", type=int, default=20)
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--finetune-epochs", type=int, default=100)
    parser.add_argument("--finetune-lr", type=float, default=1e-2)
    parser.add_argument("--replay", type=int, default=20,
                        help="old-class samples kept for fine-tuning next to the shots (a run without is made too)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when installed")
    parser.add_argument("--only", choices=("accuracy", "throughput", "personalisation"), nargs="+")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--evaluate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.threads = args.threads[0]
        print(json.dumps(WORKERS[args.worker](args)))
        return 0

    parts = set(args.only or ("accuracy", "throughput", "personalisation"))
    load_before = list(os.getloadavg())
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
               "config": {"channels": args.channels, "hidden": args.hidden, "batch": args.batch, "optimizer": "adam",
                          "lr": args.lr, "epochs": args.epochs, "seed": args.seed}}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        if "accuracy" in parts:
            results["accuracy"] = accuracy_run(args, scratch)
            if _torch_available() and not args.no_torch:
                results["torch_accuracy"] = _run_worker("torch", 1, args.epochs, True, args)
        if "throughput" in parts:
            results["throughput"] = throughput_run(args)
        if "personalisation" in parts:
            results["personalisation"] = personalisation_run(args, scratch)
    import edge

    results["edge_isa"] = edge.runtime_isa()
    results["machine"]["load_average_before_after"] = [load_before, list(os.getloadavg())]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_digits.json").write_text(json.dumps(results, indent=2))
    if parts == {"accuracy", "throughput", "personalisation"}:
        (out / "train_digits.md").write_text(_markdown(results))
        print(_markdown(results))
    else:
        print(json.dumps({k: v for k, v in results.items() if k in parts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
