"""Federated averaging on non-IID digits: rounds to 90 % / 95 % held-out accuracy, FedAvg vs FedSGD,
what compressing the pushed deltas costs in bytes and accuracy, what secure aggregation costs in
time and bytes, and the accuracy of differentially private rounds at a few noise multipliers with
their epsilon.

    python benchmarks/train_federated.py                     # rate sweep and compression, results/federated-<stamp>.*
    python benchmarks/train_federated.py --quick             # one seed, fewer FedSGD rates
    python benchmarks/train_federated.py --parts secagg,secagg-cost,dp
    python benchmarks/train_federated.py --parts emulated --profiles 3g,4g,wifi

The setting is the test's (tests/cloudsplit/test_federated.py): scikit-learn digits (1347 training
images, 450 held out), 20 clients holding two classes each, C = 0.25 (5 clients a round), the
digits MLP (64-32-10) with plain SGD. FedAvg runs E = 5 local epochs of B = 10; FedSGD one step on
each sampled client's whole data per round, at the best of several learning rates (McMahan et al.
tune each method's rate the same way). Every run is a real server and 20 clients, each a thread
with its own gRPC channel, on 127.0.0.1; the server evaluates the global model on the held-out
set after every round. Rounds to an accuracy are the first round that reached it.

Secure aggregation (``--parts secagg``) runs FedAvg at one rate with and without it on the same
seeds; ``secagg-cost`` times the protocol's arithmetic alone (masking on a client, unmasking on
the server with and without a dropped client) for more clients and a bigger vector than the
digits MLP's. DP (``--parts dp``) runs FedAvg with every update clipped to ``--dp-clip`` and
Gaussian noise of multiplier z on each round's sum, for a fixed number of rounds.

Emulated devices (``--parts emulated``): each client is its own process (``python -m
cloudsplit.federated``), slowed as the split benchmark's device is (the runtime's reference kernels,
``EDGE_ISA=scalar``, one interpreter thread), on the device side of a link shaped by
``cloudsplit.netem`` to each of ``--profiles``; the server runs in a process on the other side.
FedAvg and FedSGD each at their rate (``--emulated-lrs``) to 95 %, so the table shows what the
rounds cost in wall time once compute and the link are a device's.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# cloudsplit and the fixtures are imported where they are used: the Flower worker (--flower-worker)
# runs this file in Flower's own environment, whose protobuf cannot load our generated stubs.

TARGETS = (0.90, 0.95)
# (pushed deltas, pulled weights)
COMPRESSIONS = (("none", "none"), ("fp16", "none"), ("int8", "none"), ("int8-per-tensor", "none"),
                ("int8", "fp16"))


def run(model_path, shards, validation, config, compression: str = "none",
        pull_compression: str = "none") -> dict:
    """One job of ``config`` (a federated_service.JobConfig) with a client per shard; its figures."""
    from cloudsplit.server import start_server
    from tests.fixtures import federated

    with start_server(federated=True) as handle:
        job, clients, wall = federated.run_federation(
            handle, model_path, shards, config, validation, compression=compression, timeout_s=1800,
            clients_kwargs=[{"pull_compression": pull_compression}] * len(shards))
        status = job.status()
    return figures(config, status, [r for c in clients for r in c.reports if r.pushed], wall,
                   compression, pull_compression)


def figures(config, status, reports, wall: float, compression: str = "none",
            pull_compression: str = "none") -> dict:
    """A job's figures from its final status and the reports of the rounds its clients pushed in
    (empty when the clients ran in other processes: the per-client byte counts are then None)."""
    from tests.fixtures import federated

    history = list(status.history)
    accuracies = [r.val_accuracy for r in history if r.HasField("val_accuracy")]
    durations = [r.duration_s for r in history]
    return {"strategy": config.strategy, "learning_rate": config.learning_rate, "compression": compression,
            "pull_compression": pull_compression, "secure_aggregation": config.secure_aggregation,
            "dp_clip_norm": config.dp_clip_norm, "dp_noise_multiplier": config.dp_noise_multiplier,
            "dp_delta": config.dp_delta, "dp_epsilon": status.dp_epsilon if status.HasField("dp_epsilon") else None,
            "round_s_median": float(np.median(durations)) if durations else None,
            "round_s_mean": float(np.mean(durations)) if durations else None,
            # Secure aggregation's own messages (keys, shares, reveals and the stage replies) per client
            # and round, beside the masked push counted in push_bytes.
            "secagg_sent_per_client_round": float(np.mean([r.secagg_bytes_sent for r in reports])) if reports else 0,
            "secagg_received_per_client_round":
                float(np.mean([r.secagg_bytes_received for r in reports])) if reports else 0,
            "dropped": sum(r.dropped for r in history),
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
    parser.add_argument("--parts", default="rounds,compression",
                        help="comma-separated: rounds (the rate sweep), compression, secagg, secagg-cost, dp, "
                             "flower, emulated")
    parser.add_argument("--secagg-lr", type=float, default=0.3)
    parser.add_argument("--secagg-rounds", type=int, default=300, help="FedAvg rounds at most (stops at 95 %%)")
    parser.add_argument("--dp-clip", type=float, default=1.0)
    parser.add_argument("--dp-noises", type=float, nargs="+", default=[0.0, 0.3, 1.0, 2.0])
    parser.add_argument("--dp-rounds", type=int, default=100)
    parser.add_argument("--dp-lr", type=float, default=0.3)
    parser.add_argument("--flower-python", default="/tmp/flwr-venv/bin/python",
                        help="the Python of Flower's own environment (flwr and cffi installed)")
    parser.add_argument("--flower-rounds", type=int, default=80)
    parser.add_argument("--flower-lr", type=float, default=0.3)
    parser.add_argument("--profiles", default="4g",
                        help="emulated part: comma-separated link profiles of cloudsplit.netem (3g, 4g, wifi)")
    parser.add_argument("--shaping", default=None, help="emulated part: force a cloudsplit.netem shaping mode")
    parser.add_argument("--device-isa", default="scalar",
                        help="emulated part: EDGE_ISA of the client processes (default scalar: reference kernels)")
    parser.add_argument("--emulated-lrs", type=float, nargs=2, default=[0.3, 0.5], metavar=("FEDAVG", "FEDSGD"),
                        help="emulated part: the learning rate of each strategy (their best in the rate sweep)")
    parser.add_argument("--emulated-server", nargs=7, help=argparse.SUPPRESS)
    parser.add_argument("--flower-worker", nargs=3, metavar=("FOLDER", "MODEL", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--report", metavar="JSON", nargs="+",
                        help="only print the report of results files (their runs together; seeds differ)")
    args = parser.parse_args(argv)
    if args.emulated_server:
        folder, strategy, lr, seed, rounds, host, timeout_s = args.emulated_server
        return emulated_server(folder, strategy, float(lr), int(seed), int(rounds), host, float(timeout_s))
    if args.flower_worker:
        return flower_worker(*args.flower_worker, seed=args.seeds[0], rounds=args.flower_rounds, lr=args.flower_lr)
    if args.report:
        saved = [json.loads(pathlib.Path(path).read_text()) for path in args.report]
        meta = {**saved[0]["meta"], "command": " + ".join(s["meta"]["command"] for s in saved),
                "seeds": [seed for s in saved for seed in s["meta"]["seeds"]]}
        print(_report(meta, [run for s in saved for run in s["runs"]], [c for s in saved for c in s.get("costs", [])]))
        return 0
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    fedavg_lrs = args.fedavg_lrs or ([0.2] if args.quick else [0.1, 0.2, 0.3, 0.5])
    fedsgd_lrs = args.fedsgd_lrs or ([0.5] if args.quick else [0.2, 0.5, 1.0])

    from cloudsplit.federated_service import JobConfig
    from tests.fixtures import federated

    load_before = os.getloadavg()
    x_train, y_train, x_test, y_test = federated.flat_digits()
    shards = federated.non_iid_split(x_train, y_train)
    validation = (x_test, y_test)
    base = dict(fraction=0.25, min_clients=3, wait_for_clients=federated.CLIENTS, round_timeout_s=30.0)
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        model = federated.federated_mlp(pathlib.Path(folder) / "mlp.edge")
        for seed in seeds if "rounds" in args.parts.split(",") else ():
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
        for seed in seeds if "secagg" in args.parts.split(",") else ():
            for secure in (False, True):
                config = JobConfig(strategy="fedavg", epochs=5, batch_size=10, learning_rate=args.secagg_lr,
                                   rounds=args.secagg_rounds, target_accuracy=0.95, seed=seed,
                                   secure_aggregation=secure, **base)
                result = run(model, shards, validation, config)
                result["part"] = "secagg"
                runs.append(result)
                print(_line(result), flush=True)
        for seed in seeds if "dp" in args.parts.split(",") else ():
            for noise in args.dp_noises:
                config = JobConfig(strategy="fedavg", epochs=5, batch_size=10, learning_rate=args.dp_lr,
                                   rounds=args.dp_rounds, seed=seed, dp_clip_norm=args.dp_clip,
                                   dp_noise_multiplier=noise, **base)
                result = run(model, shards, validation, config)
                result["part"] = "dp"
                runs.append(result)
                print(_line(result), flush=True)
        for seed in seeds if "flower" in args.parts.split(",") else ():
            config = JobConfig(strategy="fedavg", epochs=5, batch_size=10, learning_rate=args.flower_lr,
                               rounds=args.flower_rounds, target_accuracy=0.95, seed=seed, **base)
            ours = run(model, shards, validation, config)
            ours["part"] = "flower-ours"
            runs.append(ours)
            print(_line(ours), flush=True)
            theirs = flower_run(args.flower_python, model, shards, validation, seed, args.flower_rounds, args.flower_lr)
            runs.append(theirs)
            print(f"flower {theirs['flwr_version']} seed {seed}: 90 % at {theirs['rounds_to_90']}, 95 % at "
                  f"{theirs['rounds_to_95']} of {theirs['rounds_run']} rounds; median round "
                  f"{theirs['round_s_median']:.3f} s", flush=True)
        if "emulated" in args.parts.split(","):
            folder = pathlib.Path(folder)
            for k, (x, y) in enumerate(shards):
                np.savez(folder / f"shard{k}.npz", x=x, y=y)
            np.savez(folder / "validation.npz", x=validation[0], y=validation[1])
        for seed in seeds if "emulated" in args.parts.split(",") else ():
            for profile in args.profiles.split(","):
                for strategy, lr, rounds in (("fedavg", args.emulated_lrs[0], args.fedavg_rounds),
                                             ("fedsgd", args.emulated_lrs[1], args.fedsgd_rounds)):
                    result = emulated_run(folder, profile, strategy, lr, seed, rounds, args.shaping, args.device_isa)
                    runs.append(result)
                    print(f"{profile}: {_line(result)}; to 95 % in {result['wall_to_95_s']} s", flush=True)
        costs = secagg_costs() if "secagg-cost" in args.parts.split(",") else []
        for seed in seeds if "compression" in args.parts.split(",") else ():
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
    meta["load_before"], meta["load_after"] = load_before, os.getloadavg()
    (out / f"federated-{stamp}.json").write_text(json.dumps({"meta": meta, "runs": runs, "costs": costs}, indent=1))
    (out / f"federated-{stamp}.md").write_text(_report(meta, runs, costs))
    print(_report(meta, runs, costs))
    print(f"wrote {out / f'federated-{stamp}.json'} and .md")
    return 0


def emulated_run(folder: pathlib.Path, profile: str, strategy: str, lr: float, seed: int, rounds: int,
                 shaping: str | None, device_isa: str, timeout_s: float = 1800) -> dict:
    """One job to 95 % with every client its own slowed process on the device side of a link shaped
    to ``profile`` and the server on the other side (``folder`` holds mlp.edge, shard<k>.npz and
    validation.npz)."""
    import re
    import subprocess

    from cloudsplit import netem

    clients = len(list(folder.glob("shard*.npz")))
    env = netem.child_env()
    device_env = dict(env, EDGE_ISA=device_isa) if device_isa else env
    with netem.shaped_link(profile, mode=shaping) as link:
        server = link.start_server([sys.executable, str(pathlib.Path(__file__).resolve()), "--emulated-server",
                                    str(folder), strategy, str(lr), str(seed), str(rounds), link.server_host,
                                    str(timeout_s)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        line = server.stdout.readline()
        match = re.search(r"port (\d+) job (\S+)", line)
        if not match:
            raise RuntimeError(f"the federated server did not start ({server.poll()}): {line!r}")
        address = link.address(int(match.group(1)))
        workers, logs = [], [open(folder / f"client{k}.log", "w") for k in range(clients)]
        try:
            # One after another, each connected before the next starts: the server samples by the
            # seed in the order of connection, so a seed samples as the thread-client runs do.
            for k in range(clients):
                workers.append(subprocess.Popen(link.client_argv(
                    [sys.executable, "-m", "cloudsplit.federated", "--server", address, "--job", match.group(2),
                     "--model", str(folder / "mlp.edge"), "--data", str(folder / f"shard{k}.npz"),
                     "--seed", str(k), "--timeout-s", str(timeout_s)]), stdout=logs[k], stderr=subprocess.STDOUT,
                    env=device_env, cwd=REPO))
                _wait_for_line(folder / f"client{k}.log", "connected", workers[-1])
            output = server.stdout.readline()        # the job's figures, once it ended
            # The server stays up until every client has heard that the job finished and left.
            for worker in workers:
                worker.wait(timeout=120)
        finally:
            for process in workers:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            server.stdin.close()
            server.wait(timeout=60)
            for log in logs:
                log.close()
        failed = [(folder / f"client{k}.log").read_text()[-2000:] for k, w in enumerate(workers) if w.returncode]
        if server.returncode != 0 or failed or not output:
            raise RuntimeError(f"emulated run failed: server {server.returncode}, {len(failed)} client(s) failed"
                               + (f":\n{failed[0]}" if failed else ""))
        result = json.loads(output)
        result.update(part="emulated", profile=profile, link=link.label,
                      device=f"separate process; EDGE_ISA={device_isa or '(detected)'}; 1 interpreter thread")
    return result


def _wait_for_line(path: pathlib.Path, text: str, process, timeout_s: float = 120) -> None:
    """Waits until ``process`` wrote ``text`` to its log ``path``; raises if it exits first."""
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"client {path.stem} did not connect ({process.poll()}): {path.read_text()[-2000:]}")
        time.sleep(0.02)


def emulated_server(folder: str, strategy: str, lr: float, seed: int, rounds: int, host: str,
                    timeout_s: float) -> int:
    """This file's ``--emulated-server``: a server on ``host`` with one federated job, which prints
    its port and job id, waits for the job to end (stopping it after ``timeout_s``), prints the job's figures as one JSON line, and
    serves on until its stdin closes."""
    from cloudsplit.federated_service import JobConfig
    from cloudsplit.server import start_server

    folder = pathlib.Path(folder)
    shards = sorted(folder.glob("shard*.npz"))
    with np.load(folder / "validation.npz") as data:
        validation = (data["x"], data["y"])
    extra = dict(epochs=5, batch_size=10) if strategy != "fedsgd" else {}
    config = JobConfig(strategy=strategy, learning_rate=lr, rounds=rounds, target_accuracy=0.95, seed=seed,
                       fraction=0.25, min_clients=3, wait_for_clients=len(shards), round_timeout_s=30.0, **extra)
    # Plaintext beyond loopback on purpose: the link is a private network namespace pair.
    with start_server(federated=True, host=host, insecure=True) as handle:
        job = handle.federated.start_job((folder / "mlp.edge").read_bytes(), config, validation=validation)
        print(f"port {handle.port} job {job.job_id}", flush=True)
        if not job.wait(timeout_s):
            job.stop()
        status = job.status()
        history = list(status.history)
        result = figures(config, status, [], sum(r.duration_s for r in history))
        to_95 = result["rounds_to_95"]
        result["wall_to_95_s"] = sum(r.duration_s for r in history[:to_95]) if to_95 else None
        print(json.dumps(result), flush=True)
        sys.stdin.read()            # serves on until the driver closes stdin: its clients have left
    return 0


def flower_run(flower_python: str, model_path, shards, validation, seed: int, rounds: int, lr: float,
               timeout_s: float = 600) -> dict:
    """Flower's FedAvg on the same split, model, local training and sampling fraction, in Flower's
    own environment (``flower_python``): this file's ``--flower-worker`` in a child process."""
    import subprocess

    with tempfile.TemporaryDirectory() as folder:
        arrays = {"x_test": validation[0], "y_test": validation[1]}
        for k, (x, y) in enumerate(shards):
            arrays[f"x{k}"], arrays[f"y{k}"] = x, y
        np.savez(pathlib.Path(folder) / "data.npz", **arrays)
        out = pathlib.Path(folder) / "flower.json"
        command = [flower_python, str(pathlib.Path(__file__).resolve()), "--flower-worker", folder, str(model_path),
                   str(out), "--seeds", str(seed), "--flower-rounds", str(rounds), "--flower-lr", str(lr)]
        done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                              text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"the Flower worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads(out.read_text())
    accuracies = result["accuracy_per_round"]       # index 0: the initial model
    times = result["evaluated_at"]

    def rounds_to(target):
        return next((r for r, a in enumerate(accuracies) if r > 0 and a >= target), None)

    to_95 = rounds_to(0.95)
    return {"part": "flower", "strategy": "fedavg", "learning_rate": lr, "compression": "none", "seed": seed,
            "flwr_version": result["flwr_version"], "rounds_run": len(accuracies) - 1,
            "rounds_to_90": rounds_to(0.90), "rounds_to_95": to_95,
            "wall_to_95_s": times[to_95] - result["first_fit"] if to_95 else None,
            "round_s_median": float(np.median(np.diff(times[1:]))), "final_accuracy": accuracies[-1],
            "accuracy_per_round": accuracies[1:]}


def flower_worker(folder: str, model_path: str, out: str, seed: int, rounds: int, lr: float,
                  epochs: int = 5, batch_size: int = 10, fraction: float = 0.25) -> int:
    """Runs in Flower's environment (flwr, numpy, cffi and this repository on PYTHONPATH for
    ``edge``): a Flower server on 127.0.0.1 with FedAvg (C = ``fraction``, weighted by sample
    count, the global model evaluated on the held-out set after every round by the same
    ``edge.Trainer`` evaluation as ours), and one Flower client thread per shard training with
    ``edge.Trainer`` exactly as ``cloudsplit.federated.Client.train_locally`` does."""
    import random
    import socket
    import threading

    import flwr
    from flwr.client import NumPyClient
    from flwr.common import ndarrays_to_parameters
    from flwr.compat.client.app import start_client
    from flwr.server import ServerConfig, start_server
    from flwr.server.strategy import FedAvg

    from edge.trainer import Trainer

    random.seed(seed)          # Flower's client manager samples with the random module
    data = np.load(pathlib.Path(folder) / "data.npz")
    count = sum(1 for name in data.files if name.startswith("y") and name[1:].isdigit())
    shards = [(data[f"x{k}"], data[f"y{k}"]) for k in range(count)]
    evaluator = Trainer(model_path)
    names = list(evaluator.trainable)
    initial = [np.array(evaluator.get_variable(name), np.float32) for name in names]
    fit_started: list[float] = []

    class DigitsClient(NumPyClient):
        def __init__(self, k: int):
            self.trainer = Trainer(model_path)
            self.x, self.y = shards[k]
            self.rng = np.random.default_rng(k)

        def get_parameters(self, config):
            return [self.trainer.get_variable(name) for name in names]

        def fit(self, parameters, config):
            fit_started.append(time.perf_counter())
            trainer = self.trainer
            trainer.reset()
            for name, value in zip(names, parameters):
                trainer.set_variable(name, value)
            trainer.learning_rate = lr
            for _ in range(epochs):
                order = self.rng.permutation(len(self.y))
                for offset in range(0, len(self.y), batch_size):
                    chosen = order[offset:offset + batch_size]
                    trainer.train_step(self.x[chosen], self.y[chosen])
            return [trainer.get_variable(name) for name in names], len(self.y), {}

        def evaluate(self, parameters, config):
            return 0.0, len(self.y), {}

    accuracies, evaluated_at = [], []

    def evaluate(server_round, parameters, config):
        for name, value in zip(names, parameters):
            evaluator.set_variable(name, value)
        metrics = evaluator.evaluate(data["x_test"], data["y_test"])
        accuracies.append(float(metrics["accuracy"]))
        evaluated_at.append(time.perf_counter())
        return float(metrics["loss"]), {"accuracy": float(metrics["accuracy"])}

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    def client(k: int) -> None:
        # start_client gives up on a refused connection: wait until the server listens.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        start_client(server_address=address, client=DigitsClient(k).to_client(), insecure=True)

    clients = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(count)]
    for thread in clients:
        thread.start()
    strategy = FedAvg(fraction_fit=fraction, fraction_evaluate=0.0, min_fit_clients=3, min_evaluate_clients=0,
                      min_available_clients=count, evaluate_fn=evaluate,
                      initial_parameters=ndarrays_to_parameters(initial))
    start_server(server_address=address, config=ServerConfig(num_rounds=rounds), strategy=strategy)
    for thread in clients:
        thread.join(30)
    pathlib.Path(out).write_text(json.dumps({"flwr_version": flwr.__version__, "accuracy_per_round": accuracies,
                                             "evaluated_at": evaluated_at, "first_fit": min(fit_started)}))
    return 0


def secagg_costs(repeats: int = 3) -> list[dict]:
    """Milliseconds of the protocol's arithmetic, without the network: one client's share stage
    (Shamir splits and AES-GCM seals for n participants) and masking, and the server's unmasking,
    for n clients, vectors of L elements and 0 or 1 clients dropped after sharing (best of
    ``repeats``)."""
    from cloudsplit import secagg

    def best(function) -> float:
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            function()
            times.append(time.perf_counter() - began)
        return 1000 * min(times)

    rows = []
    for n in (5, 20):
        for length in (2411, 1_000_001):
            for dropped in (0, 1):
                ids = [f"client{k:02d}" for k in range(n)]
                threshold = secagg.threshold_for(n, 2 / 3)
                sessions = {c: secagg.ClientSession(c, b"bench|1") for c in ids}
                server = secagg.ServerRound(b"bench|1", frozenset(ids), threshold, length)
                for c in ids:
                    server.add_keys(c, *sessions[c].advertise())
                participants = server.close_keys()
                share_ms = best(lambda: sessions[ids[0]].share(participants, threshold))
                for c in ids:
                    server.add_shares(c, sessions[c].share(participants, threshold))
                server.close_shares(ids)
                for c in ids:
                    sessions[c].receive(server.holders, server.inbox(c))
                update = secagg.encode_fixed(np.random.default_rng(0).normal(size=length))
                mask_ms = best(lambda: sessions[ids[0]].mask(update))
                survivors = ids[dropped:]
                for c in survivors:
                    server.add_masked(c, sessions[c].mask(update))
                server.close_masked()
                for c in survivors:
                    server.add_reveal(c, *sessions[c].reveal(server.survivors, server.dropped))
                seeds, keys = dict(server.seed_shares), dict(server.key_shares)

                def unmask():
                    server.seed_shares, server.key_shares = dict(seeds), dict(keys)
                    return server.unmask()

                unmask_ms = best(unmask)
                total = secagg.decode_fixed(unmask())
                assert np.allclose(total, len(survivors) * secagg.decode_fixed(update), atol=1e-6 * n)
                rows.append({"clients": n, "length": length, "dropped": dropped, "threshold": threshold,
                             "share_ms": share_ms, "mask_ms": mask_ms, "unmask_ms": unmask_ms})
                print(f"secagg arithmetic: n {n}, L {length}, dropped {dropped}: share {share_ms:.1f} ms, "
                      f"mask {mask_ms:.1f} ms, unmask {unmask_ms:.1f} ms", flush=True)
    return rows


def _line(r: dict) -> str:
    extra = (" secure" if r.get("secure_aggregation") else "") + (
        f" dp z={r['dp_noise_multiplier']:g} C={r['dp_clip_norm']:g} eps={r['dp_epsilon']}"
        if r.get("dp_clip_norm") else "")
    return (f"{r['strategy']:6s} lr {r['learning_rate']:<4g} {r['compression']:15s}{extra} seed {r['seed']}: "
            f"90 % at {r['rounds_to_90']}, 95 % at {r['rounds_to_95']} of {r['rounds_run']} rounds; "
            f"final {r['final_accuracy']:.3f}; push {_bytes(r['push_bytes_per_client_round'])} B/client/round; "
            f"{r['wall_s']:.1f} s")


def _report(meta: dict, runs: list[dict], costs: list[dict] = ()) -> str:
    load = ""
    if "load_before" in meta:
        load = (f"; load average (1, 5, 15 min) before {_loads(meta['load_before'])}, "
                f"after {_loads(meta['load_after'])}")
    lines = [f"# Federated digits, {meta['date_utc']} UTC", "",
             f"`{meta['command']}`; {meta['clients']} clients x 2 classes, C = {meta['fraction']}, "
             f"E = {meta['epochs']}, B = {meta['batch_size']}; seeds {meta['seeds']}{load}", ""]
    swept = [r for r in runs if not r.get("fixed_rounds") and not r.get("part")]
    if swept:
        lines += _rounds_report(swept)
    fixed = [r for r in runs if r.get("fixed_rounds")]
    if fixed:
        lines += _compression_report(fixed)
    secure = [r for r in runs if r.get("part") == "secagg"]
    if secure:
        lines += _secagg_report(secure)
    if costs:
        lines += ["", "## Secure aggregation's arithmetic (no network; best of 3, ms)", "",
                  "| clients n | threshold | vector length L | dropped | one client's shares | one client's masking | "
                  "server's unmasking |", "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {c['clients']} | {c['threshold']} | {c['length']} | {c['dropped']} | {c['share_ms']:.1f} | "
                  f"{c['mask_ms']:.1f} | {c['unmask_ms']:.1f} |" for c in costs]
    private = [r for r in runs if r.get("part") == "dp"]
    if private:
        lines += _dp_report(private, meta["fraction"])
    emulated = [r for r in runs if r.get("part") == "emulated"]
    if emulated:
        lines += _emulated_report(emulated)
    ours = {r["seed"]: r for r in runs if r.get("part") == "flower-ours"}
    flower = {r["seed"]: r for r in runs if r.get("part") == "flower"}
    if ours and flower:
        lines += _flower_report(ours, flower)
    return "\n".join(lines) + "\n"


def _bytes(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def _loads(values) -> str:
    return " ".join(f"{v:.1f}" for v in values)


def _rounds_report(runs: list[dict]) -> list[str]:
    lines = ["## Rounds to accuracy", "",
             "| strategy | lr | seed | rounds to 90 % | rounds to 95 % | rounds run | best acc. | wall s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
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
    return lines


def _compression_report(fixed: list[dict]) -> list[str]:
    lines = ["", "## Compression (FedAvg, fixed rounds, each seed; bytes: serialized messages per client "
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
    return lines


def _secagg_report(runs: list[dict]) -> list[str]:
    lines = ["", "## Secure aggregation (FedAvg to 95 %, each seed with and without; bytes per client and round, "
             "serialized)", "",
             "| aggregation | rounds to 90 % per seed | rounds to 95 % per seed | median round s | "
             "wall s per seed | update bytes pushed | protocol bytes sent | protocol bytes received | "
             "bytes pulled |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for secure in (False, True):
        group = [r for r in runs if bool(r["secure_aggregation"]) == secure]
        if not group:
            continue
        walls = " / ".join(f"{r['wall_s']:.1f}" for r in group)
        lines.append(
            f"| {'secure' if secure else 'plain'} | {_seeds([r['rounds_to_90'] for r in group])} | "
            f"{_seeds([r['rounds_to_95'] for r in group])} | {_median([r['round_s_median'] for r in group]):.3f} | "
            f"{walls} | "
            f"{np.mean([r['push_bytes_per_client_round'] for r in group]):.0f} | "
            f"{np.mean([r['secagg_sent_per_client_round'] for r in group]):.0f} | "
            f"{np.mean([r['secagg_received_per_client_round'] for r in group]):.0f} | "
            f"{np.mean([r['pull_bytes_per_client_round'] for r in group]):.0f} |")
    return lines


def _emulated_report(runs: list[dict]) -> list[str]:
    lines = ["", f"## Emulated devices ({runs[0]['device']}; the server in another process across the link; "
             "round s: from sampling to aggregation)", "",
             "| link | strategy | lr | seed | rounds to 90 % | rounds to 95 % | median round s | s to 95 % | "
             "late updates | tensor bytes pushed per update |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        wall = "-" if r["wall_to_95_s"] is None else f"{r['wall_to_95_s']:.1f}"
        lines.append(f"| {r['profile']} | {r['strategy']} | {r['learning_rate']:g} | {r['seed']} | "
                     f"{r['rounds_to_90'] or '-'} | {r['rounds_to_95'] or '-'} | {r['round_s_median']:.3f} | {wall} | "
                     f"{r['late']} | {r['server_tensor_bytes_pushed_per_update']:.0f} |")
    lines.append("")
    for profile, label in dict.fromkeys((r["profile"], r["link"]) for r in runs):
        lines.append(f"- {label}")
    for link in dict.fromkeys(r["profile"] for r in runs):
        by = {s: [r for r in runs if r["profile"] == link and r["strategy"] == s] for s in ("fedavg", "fedsgd")}
        if all(by.values()):
            walls = {s: _median([r["wall_to_95_s"] or r["round_s_mean"] * r["rounds_run"] for r in group])
                     for s, group in by.items()}
            rounds = {s: _median([r["rounds_to_95"] or r["rounds_run"] for r in group]) for s, group in by.items()}
            lines.append(f"- {link}: FedSGD / FedAvg median rounds to 95 % {rounds['fedsgd'] / rounds['fedavg']:.2f}x, "
                         f"wall time to 95 % {walls['fedsgd'] / walls['fedavg']:.2f}x")
    return lines


def _flower_report(ours: dict, flower: dict) -> list[str]:
    version = next(iter(flower.values()))["flwr_version"]
    lines = ["", f"## Beside Flower {version} (FedAvg, same split, model, local training, C and rate; "
             "wall seconds from the first local step to the round that reached 95 %)", "",
             "| seed | ours: rounds to 90 % | Flower | ours: rounds to 95 % | Flower | ours: wall s to 95 % | Flower | "
             "ours: median round s | Flower |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    seeds = sorted(set(ours) & set(flower))

    def cell(value, digits=None):
        return "-" if value is None else (f"{value:.{digits}f}" if digits is not None else str(value))

    for seed in seeds:
        a, b = ours[seed], flower[seed]
        lines.append(f"| {seed} | {cell(a['rounds_to_90'])} | {cell(b['rounds_to_90'])} | {cell(a['rounds_to_95'])} | "
                     f"{cell(b['rounds_to_95'])} | {cell(a['wall_s'], 1)} | {cell(b['wall_to_95_s'], 1)} | "
                     f"{a['round_s_median']:.3f} | {b['round_s_median']:.3f} |")

    def median(rows, key):
        values = [r[key] if r[key] is not None else r["rounds_run"] for r in rows]
        return _median(values)

    a_rows, b_rows = [ours[s] for s in seeds], [flower[s] for s in seeds]
    lines.append(f"| median | {median(a_rows, 'rounds_to_90'):g} | {median(b_rows, 'rounds_to_90'):g} | "
                 f"{median(a_rows, 'rounds_to_95'):g} | {median(b_rows, 'rounds_to_95'):g} | "
                 f"{_median([r['wall_s'] for r in a_rows]):.1f} | "
                 f"{_median([r['wall_to_95_s'] for r in b_rows if r['wall_to_95_s'] is not None]):.1f} | "
                 f"{_median([r['round_s_median'] for r in a_rows]):.3f} | "
                 f"{_median([r['round_s_median'] for r in b_rows]):.3f} |")
    return lines


def _dp_report(runs: list[dict], fraction: float) -> list[str]:
    first = runs[0]
    lines = ["", f"## Differential privacy (FedAvg, {first['rounds_run']} rounds, clip C = {first['dp_clip_norm']:g}, "
             f"delta = {first['dp_delta']:g}, clients sampled with q = {fraction:g}; epsilon from the RDP accountant)",
             "",
             "| noise multiplier z | epsilon after the rounds | rounds to 90 % per seed | final acc. per seed | "
             "mean acc. of the last 10 rounds, mean over seeds |", "| --- | --- | --- | --- | --- |"]
    for noise in dict.fromkeys(r["dp_noise_multiplier"] for r in runs):
        group = [r for r in runs if r["dp_noise_multiplier"] == noise]
        epsilon = group[0]["dp_epsilon"]
        finals = " / ".join(f"{r['final_accuracy']:.3f}" for r in group)
        lines.append(f"| {noise:g}{' (clipping only)' if noise == 0 else ''} | "
                     f"{'-' if epsilon is None else f'{epsilon:.3g}'} | {_seeds([r['rounds_to_90'] for r in group])} | "
                     f"{finals} | "
                     f"{np.mean([r['mean_last10_accuracy'] for r in group]):.3f} |")
    return lines


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
