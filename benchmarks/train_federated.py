"""Federated averaging on non-IID digits: rounds to 90 % / 95 % held-out accuracy, FedAvg vs FedSGD,
and what compressing the pushed deltas costs in bytes and accuracy.

    python benchmarks/train_federated.py                     # everything, results/federated-<stamp>.*
    python benchmarks/train_federated.py --quick             # one seed, fewer FedSGD rates

The setting is the test's (tests/cloudsplit/test_federated.py): scikit-learn digits (1347 training
images, 450 held out), 20 clients holding two classes each, C = 0.25 (5 clients a round), the
digits MLP (64-32-10) with plain SGD. FedAvg runs E = 5 local epochs of B = 10; FedSGD one step on
each sampled client's whole data per round, at the best of several learning rates (McMahan et al.
tune each method's rate the same way). Every run is a real server and 20 clients, each a thread
with its own gRPC channel, on 127.0.0.1; the server evaluates the global model on the held-out
set after every round. Rounds to an accuracy are the first round that reached it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cloudsplit.federated_service import JobConfig  # noqa: E402
from cloudsplit.server import start_server  # noqa: E402
from tests.fixtures import federated  # noqa: E402

TARGETS = (0.90, 0.95)
# (pushed deltas, pulled weights)
COMPRESSIONS = (("none", "none"), ("fp16", "none"), ("int8", "none"), ("int8-per-tensor", "none"),
                ("int8", "fp16"))


def run(model_path, shards, validation, config: JobConfig, compression: str = "none",
        pull_compression: str = "none") -> dict:
    with start_server(federated=True) as handle:
        job, clients, wall = federated.run_federation(
            handle, model_path, shards, config, validation, compression=compression, timeout_s=1800,
            clients_kwargs=[{"pull_compression": pull_compression}] * len(shards))
        status = job.status()
    history = list(status.history)
    accuracies = [r.val_accuracy for r in history if r.HasField("val_accuracy")]
    reports = [r for c in clients for r in c.reports if r.pushed]
    return {"strategy": config.strategy, "learning_rate": config.learning_rate, "compression": compression,
            "pull_compression": pull_compression,
            "seed": config.seed, "rounds_run": len(history), "wall_s": wall,
            **{f"rounds_to_{int(t * 100)}": federated.rounds_to(history, t) for t in TARGETS},
            "final_accuracy": accuracies[-1] if accuracies else None,
            "best_accuracy": max(accuracies) if accuracies else None,
            "mean_last10_accuracy": float(np.mean(accuracies[-10:])) if accuracies else None,
            # Serialized message bytes a client sent / received in a round it served (protobuf, without
            # gRPC's 5-byte frame and HTTP/2 headers); the server's own count is tensor data only.
            "push_bytes_per_client_round": float(np.mean([r.bytes_pushed for r in reports])) if reports else None,
            "pull_bytes_per_client_round": float(np.mean([r.bytes_pulled for r in reports])) if reports else None,
            "server_tensor_bytes_pushed_per_update": status.bytes_pushed / max(1, status.updates),
            "late": status.late, "refused": status.refused, "abandoned_rounds": status.abandoned_rounds,
            "accuracy_per_round": accuracies}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--fedavg-rounds", type=int, default=300)
    parser.add_argument("--fedsgd-rounds", type=int, default=1000)
    parser.add_argument("--fedavg-lrs", type=float, nargs="+", default=None)
    parser.add_argument("--fedsgd-lrs", type=float, nargs="+", default=None)
    parser.add_argument("--compression-rounds", type=int, default=100,
                        help="rounds of each compressed FedAvg run (compared at a fixed round count)")
    parser.add_argument("--compression-lr", type=float, default=0.3)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--parts", default="rounds,compression", help="rounds (the rate sweep), compression")
    parser.add_argument("--report", metavar="JSON", nargs="+",
                        help="only print the report of results files (their runs together; seeds differ)")
    args = parser.parse_args(argv)
    if args.report:
        saved = [json.loads(pathlib.Path(path).read_text()) for path in args.report]
        meta = {**saved[0]["meta"], "command": " + ".join(s["meta"]["command"] for s in saved),
                "seeds": [seed for s in saved for seed in s["meta"]["seeds"]]}
        print(_report(meta, [run for s in saved for run in s["runs"]]))
        return 0
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    fedavg_lrs = args.fedavg_lrs or ([0.2] if args.quick else [0.1, 0.2, 0.3, 0.5])
    fedsgd_lrs = args.fedsgd_lrs or ([0.5] if args.quick else [0.2, 0.5, 1.0])

    x_train, y_train, x_test, y_test = federated.flat_digits()
    shards = federated.non_iid_split(x_train, y_train)
    validation = (x_test, y_test)
    base = dict(fraction=0.25, min_clients=3, wait_for_clients=federated.CLIENTS, round_timeout_s=30.0)
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        model = federated.federated_mlp(pathlib.Path(folder) / "mlp.edge")
        for seed in seeds if "rounds" in args.parts else ():
            for lr in fedavg_lrs:
                config = JobConfig(strategy="fedavg", epochs=5, batch_size=10, learning_rate=lr,
                                   rounds=args.fedavg_rounds, target_accuracy=0.95, seed=seed, **base)
                runs.append(run(model, shards, validation, config))
                print(_line(runs[-1]), flush=True)
            for lr in fedsgd_lrs:
                config = JobConfig(strategy="fedsgd", learning_rate=lr, rounds=args.fedsgd_rounds,
                                   target_accuracy=0.95, seed=seed, **base)
                runs.append(run(model, shards, validation, config))
                print(_line(runs[-1]), flush=True)
        for seed in seeds if "compression" in args.parts else ():
            for push, pull in COMPRESSIONS:
                config = JobConfig(strategy="fedavg", epochs=5, batch_size=10, learning_rate=args.compression_lr,
                                   rounds=args.compression_rounds, seed=seed, **base)
                result = run(model, shards, validation, config, compression=push, pull_compression=pull)
                result["fixed_rounds"] = True
                runs.append(result)
                print(_line(result), flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date_utc": stamp, "machine": platform.machine(), "python": platform.python_version(),
            "clients": federated.CLIENTS, "fraction": 0.25, "epochs": 5, "batch_size": 10, "seeds": seeds,
            "command": "python benchmarks/train_federated.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    (out / f"federated-{stamp}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    (out / f"federated-{stamp}.md").write_text(_report(meta, runs))
    print(_report(meta, runs))
    print(f"wrote {out / f'federated-{stamp}.json'} and .md")
    return 0


def _line(r: dict) -> str:
    return (f"{r['strategy']:6s} lr {r['learning_rate']:<4g} {r['compression']:15s} seed {r['seed']}: "
            f"90 % at {r['rounds_to_90']}, 95 % at {r['rounds_to_95']} of {r['rounds_run']} rounds; "
            f"final {r['final_accuracy']:.3f}; push {r['push_bytes_per_client_round']:.0f} B/client/round; "
            f"{r['wall_s']:.1f} s")


def _report(meta: dict, runs: list[dict]) -> str:
    lines = [f"# Federated digits, {meta['date_utc']} UTC", "",
             f"`{meta['command']}`; {meta['clients']} clients x 2 classes, C = {meta['fraction']}, "
             f"E = {meta['epochs']}, B = {meta['batch_size']}; seeds {meta['seeds']}", "",
             "## Rounds to accuracy", "",
             "| strategy | lr | seed | rounds to 90 % | rounds to 95 % | rounds run | best acc. | wall s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        if r.get("fixed_rounds"):
            continue
        lines.append(f"| {r['strategy']} | {r['learning_rate']:g} | {r['seed']} | {r['rounds_to_90'] or '-'} | "
                     f"{r['rounds_to_95'] or '-'} | {r['rounds_run']} | {r['best_accuracy']:.3f} | {r['wall_s']:.1f} |")
    lines += ["", "## Best rate per strategy and target (median over seeds; a seed that never got there "
              "counts as the rounds it ran)", "",
              "| target | strategy | best lr | rounds per seed | median |", "| --- | --- | --- | --- | --- |"]
    best = {target: _best(runs, target) for target in (90, 95)}
    for target, per_strategy in best.items():
        for strategy, (lr, rounds) in per_strategy.items():
            lines.append(f"| {target} % | {strategy} | {lr:g} | {_seeds(rounds)} | {_median(rounds):g} |")
    for target, per_strategy in best.items():
        if {"fedavg", "fedsgd"} <= set(per_strategy):
            ratio = _median(per_strategy["fedsgd"][1]) / _median(per_strategy["fedavg"][1])
            lines.append(f"\nFedSGD / FedAvg median rounds to {target} %, each at its best rate: {ratio:.2f}x")
    fixed = [r for r in runs if r.get("fixed_rounds")]
    if not fixed:
        return "\n".join(lines) + "\n"
    lines += ["", "## Compression (FedAvg, fixed rounds, each seed; bytes: serialized messages per client "
              "and round)", "",
              "| push / pull compression | bytes pushed | bytes pulled | rounds to 90 % per seed | "
              "final acc. per seed | mean acc. of the last 10 rounds, mean over seeds |",
              "| --- | --- | --- | --- | --- | --- |"]
    for modes in dict.fromkeys((r["compression"], r.get("pull_compression", "none")) for r in fixed):
        group = [r for r in fixed if (r["compression"], r.get("pull_compression", "none")) == modes]
        finals = " / ".join(f"{r['final_accuracy']:.3f}" for r in group)
        lines.append(f"| {modes[0]} / {modes[1]} | {group[0]['push_bytes_per_client_round']:.0f} | "
                     f"{group[0]['pull_bytes_per_client_round']:.0f} | {_seeds([r['rounds_to_90'] for r in group])} | "
                     f"{finals} | "
                     f"{np.mean([r['mean_last10_accuracy'] for r in group]):.3f} |")
    return "\n".join(lines) + "\n"


def _best(runs: list[dict], target: int) -> dict:
    """strategy -> (the rate with the fewest median rounds to ``target`` %, its rounds per seed)."""
    groups: dict = {}
    for r in runs:
        if not r.get("fixed_rounds"):
            groups.setdefault((r["strategy"], r["learning_rate"]), []).append(r[f"rounds_to_{target}"] or r["rounds_run"])
    best: dict = {}
    for (strategy, lr), rounds in groups.items():
        if strategy not in best or _median(rounds) < _median(best[strategy][1]):
            best[strategy] = (lr, rounds)
    return best


def _median(values) -> float:
    return float(np.median(values))


def _seeds(values) -> str:
    return " / ".join(str(v) if v is not None else "-" for v in values)


if __name__ == "__main__":
    sys.exit(main())
