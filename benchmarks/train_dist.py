"""Distributed training, measured: parameter shards and replicas on an embedded Ray cluster (127.0.0.1).

    python3 benchmarks/train_dist.py --out benchmarks/results            # every part
    python3 benchmarks/train_dist.py --parts scaling,stragglers --out ...  # some of them

Parts (each prints a table; all go to <out>/train-dist-<stamp>.{json,md} and a plot .png):

- scaling: system overhead alone. Compute is stood in by a fixed sleep per step (--sleep-ms,
  labelled as such) on a model of 1 MB of parameters (one 512x512 FullyConnected); samples/s at
  1..--max-replicas replicas, async and sync, as efficiency = rate(N) / (N x rate(1)). Beside it a
  raw Ray actor loop doing the same sleep and moving the same 1 MB each way per step through one
  actor, to show what Ray itself costs here.
- compute: real compute on the digits CNN (the C runtime's grad signature). One process
  (edge.Trainer.fit, 1 thread) against 2 sync replicas (1 thread each): samples/s, and wall time
  until held-out accuracy first reaches --target (evaluated every 10 updates; job start-up, i.e.
  actor creation, is reported apart).
- strategies: each strategy's final accuracy and time/steps to --target.
- stragglers: one replica slowed --slowdown x (it sleeps (x - 1) times its compute after each
  step): mean step time of sync without and with one backup worker, against no straggler.
- staleness: bounded staleness 0 / 4 / 16 with 4 replicas: steps to --target, the staleness
  histogram of applied updates, final accuracy against sync.
- compression: bytes pushed per step (what the replicas hand to the transport: encoded gradients
  and their headers) for none / fp16 / int8 / top-1 % with error feedback, and final accuracy.
- faults: --fault-runs clean runs and as many with a replica killed (SIGKILL) a third of the way,
  sync with one backup worker: accuracy of each.

The machine has 2 cores: replicas beyond 2 share them, so the compute parts show the system's
behaviour (rounds, staleness, bytes, faults), not how far it scales on a real cluster; the scaling
part sleeps instead of computing for that reason.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import signal
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cloudsplit import training  # noqa: E402
from tests.fixtures import digits  # noqa: E402

PARTS = ("scaling", "compute", "strategies", "stragglers", "staleness", "compression", "faults")


def _fc_model(path: str, batch: int = 8, width: int = 512) -> str:
    from converter.api import convert
    from converter.builder import GraphBuilder

    rng = np.random.default_rng(0)
    b = GraphBuilder("fc1mb")
    x = b.input("x", (batch, width))
    w = b.constant("fc/weights", (rng.standard_normal((width, width)) * 0.01).astype(np.float32))
    y = b.FullyConnected(x, w, b.constant("fc/bias", np.zeros(width, np.float32)))
    b.output(y, name="y")
    with open(path, "wb") as out:
        out.write(convert(b.build(), training=dict(loss="mse", optimizer="sgd", lr=1e-3)).data)
    return path


def _rate(job) -> float:
    """Samples/s of the replicas together, in steady state: the sum of each replica's own rate from
    its first finished step to its last (actor start-up, model loading and the first pull, which
    are staggered over the replicas as Ray starts them one after another, left out)."""
    stats = [s for s in job.final_stats["replicas"] if s and s.get("first_step_at")]
    return sum((s["samples"] - s["samples_at_first_step"]) / max(s["finished"] - s["first_step_at"], 1e-9)
               for s in stats)


def _step_ms(job, replica: int = 0) -> float:
    """Median time between one replica's steps (start-up and the wait for later replicas left out)."""
    return job.final_stats["replicas"][replica]["step_ms"]


def _raw_ray_rate(replicas: int, steps: int, sleep_s: float, nbytes: int) -> float:
    ray = training.ensure_ray()

    @ray.remote(num_cpus=0.01)
    class Store:
        def __init__(self):
            self.value = np.zeros(nbytes // 4, np.float32)

        def pull(self):
            return self.value

        def push(self, g):
            self.value = self.value + g

    @ray.remote(num_cpus=0.01)
    class Worker:
        def loop(self, store, steps):
            for _ in range(steps):
                value = ray.get(store.pull.remote())
                time.sleep(sleep_s)
                ray.get(store.push.remote(value * 0))
            return steps

    store = Store.remote()
    workers = [Worker.remote() for _ in range(replicas)]
    ray.get([w.loop.remote(store, 1) for w in workers])   # processes up and warm before the clock
    start = time.perf_counter()
    ray.get([w.loop.remote(store, steps) for w in workers])
    elapsed = time.perf_counter() - start
    for actor in (store, *workers):
        ray.kill(actor)
    return replicas * steps / elapsed


def part_scaling(args, folder):
    path = _fc_model(os.path.join(folder, "fc1mb.edge"))
    x = np.zeros((4096, 512), np.float32)
    y = np.zeros((4096, 512), np.float32)
    sleep = args.sleep_ms / 1e3
    rows = []
    counts = [n for n in (1, 2, 4, 8, 16) if n <= args.max_replicas]
    base = {}
    for n in counts:
        row = {"replicas": n}
        for name, strategy in (("async", training.Async()), ("sync", training.Sync())):
            steps = args.scaling_steps * (n if name == "async" else 1)
            job = training.fit(path, (x, y), strategy=strategy, replicas=n, ps_shards=1, steps=steps,
                               stand_in_compute_s=sleep, eval_every=0, checkpoint_every=0)
            rate = _rate(job) / 8  # steps/s (batch 8)
            base.setdefault(name, rate)
            row[f"{name}_steps_per_s"] = rate
            row[f"{name}_efficiency"] = rate / (n * base[name])
        raw = _raw_ray_rate(n, args.scaling_steps, sleep, 512 * 512 * 4)
        base.setdefault("raw", raw)
        row["raw_ray_steps_per_s"] = raw
        row["raw_ray_efficiency"] = raw / (n * base["raw"])
        rows.append(row)
        print(f"scaling {row}", flush=True)
    return rows


def _digits_model(folder, batch=32, name="cnn.edge"):
    return digits.write_trainable(digits.digits_cnn(batch=batch), os.path.join(folder, name),
                                  loss="cross_entropy", optimizer="adam", lr=3e-3)


def _time_to(history, target):
    for record in history:
        if record.get("val_accuracy") is not None and record["val_accuracy"] >= target:
            return record["time"], record["step"]
    return None, None


def _resnet8_model(folder, batch=32) -> str:
    from benchmarks.bench_train_step import resnet8_graph, resnet8_weights
    from converter.api import convert

    path = os.path.join(folder, "resnet8.edge")
    graph = resnet8_graph(batch, resnet8_weights(0))
    with open(path, "wb") as out:
        out.write(convert(graph, training=dict(loss="cross_entropy", optimizer="adam", lr=1e-3)).data)
    return path


def part_compute(args, folder):
    """Real compute. digits: its step (~1 ms at batch 32) is below one Ray round trip, so this row
    shows the system's per-step cost; resnet8 (32x32x3, BatchNorm): ~70 ms per step at 1 thread,
    where replicas have work to share."""
    from edge.trainer import Trainer

    x, y, xt, yt = digits.load_digits_split()
    path = _digits_model(folder)
    rows = {}
    with Trainer(path) as trainer:
        history = trainer.fit(x, y, batch_size=32, epochs=3, seed=0, verbose=False)
        single_rate = float(np.median(history["samples_per_s"]))
    with Trainer(path) as trainer:
        start = time.perf_counter()
        reached = None
        for epoch in range(40):
            trainer.fit(x, y, batch_size=32, epochs=1, seed=epoch, verbose=False)
            if trainer.evaluate(xt, yt)["accuracy"] >= args.target:
                reached = time.perf_counter() - start   # evaluation time included, as in the job
                break
    job = training.fit(path, (x, y), strategy=training.Sync(), replicas=2, ps_shards=1, epochs=6, eval_every=0)
    sync_rate = _rate(job)
    job2 = training.fit(path, (x, y), strategy=training.Sync(), replicas=2, ps_shards=1, epochs=40,
                        validation_data=(xt, yt), eval_every=10, report_every=0.05, target_accuracy=args.target)
    startup = min(s["first_step_at"] for s in job2.final_stats["replicas"] if s) - (job2.started_at or 0)
    t, step = _time_to(job2.history, args.target)
    rows["digits"] = {"single_samples_per_s": single_rate, "sync2_samples_per_s": sync_rate,
                      "speedup": sync_rate / single_rate, "single_time_to_target_s": reached,
                      "sync2_time_to_target_s": t, "sync2_time_to_target_without_startup_s": (t - startup) if t else None,
                      "sync2_steps_to_target": step, "startup_s": startup}
    print(f"compute digits {rows['digits']}", flush=True)
    # resnet8: samples/s only (random images and labels).
    rpath = _resnet8_model(folder)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((1024, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 10, 1024).astype(np.int32)
    with Trainer(rpath) as trainer:
        history = trainer.fit(images[:512], labels[:512], batch_size=32, epochs=2, seed=0, verbose=False)
        single = float(np.max(history["samples_per_s"]))
    row = {"single_samples_per_s": single}
    for name, strategy in (("sync2", training.Sync()), ("async2", training.Async())):
        job = training.fit(rpath, (images, labels), strategy=strategy, replicas=2, ps_shards=1, steps=24 if name == "sync2" else 48,
                           eval_every=0, checkpoint_every=0)
        row[f"{name}_samples_per_s"] = _rate(job)
        row[f"{name}_speedup"] = row[f"{name}_samples_per_s"] / single
    rows["resnet8"] = row
    print(f"compute resnet8 {row}", flush=True)
    return rows


def part_strategies(args, folder):
    x, y, xt, yt = digits.load_digits_split()
    path = _digits_model(folder)
    rows = []
    for name, strategy, replicas in (("sync", training.Sync(), 2), ("sync+1 backup", training.Sync(1), 3),
                                     ("async", training.Async(), 2), ("ssp(4)", training.BoundedStaleness(staleness=4), 2),
                                     ("hybrid 2x2", training.Hybrid(2, 2), 4)):
        job = training.fit(path, (x, y), strategy=strategy, replicas=replicas, ps_shards=2, epochs=args.epochs,
                           validation_data=(xt, yt), eval_every=20, report_every=0.2, lr_schedule="cosine")
        t, step = _time_to(job.history, 0.97)
        rows.append({"strategy": name, "replicas": replicas, "accuracy": job.evaluate(xt, yt)["accuracy"],
                     "time_to_97_s": t, "steps_to_97": step, "steps": job.history[-1]["step"],
                     "wall_s": job.finished_at - job.started_at, "curve": [(r["time"], r["step"], r.get("val_accuracy"))
                                                                          for r in job.history]})
        print(f"strategy {rows[-1]['strategy']}: acc {rows[-1]['accuracy']:.4f} t97 {t} steps97 {step}", flush=True)
    return rows


def part_stragglers(args, folder):
    """Two settings: real digits compute (~1 ms a step, so a 5x slower replica adds little to a
    step that Ray's round trips dominate), and compute stood in by a 20 ms sleep per step (labelled),
    where the straggler's 5x shows in full unless a backup worker takes its place."""
    x, y, xt, yt = digits.load_digits_split()
    path = _digits_model(folder)
    rows = []
    for compute in ("real", "sleep 20 ms"):
        stand_in = None if compute == "real" else 0.02
        epochs = args.epochs if compute == "real" else 2
        first = len(rows)
        for name, strategy, replicas, slow in (("no straggler", training.Sync(), 2, {}),
                                               ("straggler, no backup", training.Sync(), 2, {1: args.slowdown}),
                                               ("straggler, 1 backup", training.Sync(1), 3, {2: args.slowdown})):
            job = training.fit(path, (x, y), strategy=strategy, replicas=replicas, ps_shards=1, epochs=epochs,
                               slowdown=slow, eval_every=0, lr_schedule="cosine", stand_in_compute_s=stand_in)
            rows.append({"compute": compute, "case": name, "step_ms": _step_ms(job),
                         "accuracy": job.evaluate(xt, yt)["accuracy"] if stand_in is None else None,
                         "late_dropped": job.history[-1]["late"]})
            print(f"straggler {rows[-1]}", flush=True)
        for row in rows[first:]:
            row["vs_no_straggler"] = row["step_ms"] / rows[first]["step_ms"]
    return rows


def part_staleness(args, folder):
    x, y, xt, yt = digits.load_digits_split()
    path = _digits_model(folder)
    rows = []
    for name, strategy in (("sync", training.Sync()), ("ssp(0)", training.BoundedStaleness(staleness=0)),
                           ("ssp(4)", training.BoundedStaleness(staleness=4)),
                           ("ssp(16)", training.BoundedStaleness(staleness=16))):
        job = training.fit(path, (x, y), strategy=strategy, replicas=4, ps_shards=1, epochs=args.epochs,
                           validation_data=(xt, yt), eval_every=20, report_every=0.2, lr_schedule="cosine")
        t, step = _time_to(job.history, args.target)
        last = job.history[-1]
        rows.append({"strategy": name, "steps_to_target": step, "time_to_target_s": t,
                     "accuracy": job.evaluate(xt, yt)["accuracy"], "staleness": last["staleness"],
                     "rejected_stale": last["stale"]})
        print(f"staleness {rows[-1]}", flush=True)
    return rows


def part_compression(args, folder):
    x, y, xt, yt = digits.load_digits_split()
    path = _digits_model(folder)
    rows = []
    for optimizer, rate in (("momentum", 0.05), ("adam", 3e-3)):
        first = len(rows)
        for mode in ("none", "fp16", "int8", "topk:0.01"):
            job = training.fit(path, (x, y), strategy=training.Sync(), replicas=2, ps_shards=1, epochs=args.epochs,
                               compression=mode, eval_every=0, optimizer=optimizer, learning_rate=rate,
                               lr_schedule="cosine")
            stats = [s for s in job.final_stats["replicas"] if s]
            per_step = sum(s["bytes_pushed"] for s in stats) / sum(s["pushes"] for s in stats)
            rows.append({"optimizer": optimizer, "compression": mode, "bytes_per_push": per_step,
                         "accuracy": job.evaluate(xt, yt)["accuracy"]})
            print(f"compression {rows[-1]}", flush=True)
        for row in rows[first:]:
            row["vs_none"] = row["bytes_per_push"] / rows[first]["bytes_per_push"]
            row["accuracy_delta_points"] = 100 * (row["accuracy"] - rows[first]["accuracy"])
    return rows


def part_faults(args, folder):
    x, y, xt, yt = digits.load_digits_split()
    path = _digits_model(folder)
    rows = []
    for kind in ("clean", "replica killed"):
        for run in range(args.fault_runs):
            job = training.start(path, (x, y), strategy=training.Sync(1), replicas=3, ps_shards=1, epochs=args.epochs,
                                 eval_every=0, report_every=0.2, seed=run, lr_schedule="cosine")
            if kind != "clean":
                while not job.history or (job.history[-1]["step"] or 0) < job.target_steps // 3:
                    time.sleep(0.1)
                pid = job.workers()["replicas"][1]["pid"]
                os.kill(pid, signal.SIGKILL)
            job.wait()
            rows.append({"case": kind, "seed": run, "accuracy": job.evaluate(xt, yt)["accuracy"],
                         "events": [e["event"] for e in job.events]})
            print(f"faults {rows[-1]}", flush=True)
    return rows


def markdown(results) -> str:
    lines = [f"# Distributed training ({results['machine']})", "", f"`{results['command']}`", ""]
    if "scaling" in results:
        lines += ["## Scaling, compute stood in by a fixed sleep of "
                  f"{results['args']['sleep_ms']} ms per step, 1 MB of parameters", "",
                  "| replicas | async steps/s | async eff. | sync steps/s | sync eff. | raw Ray loop steps/s | raw eff. |",
                  "|---|---|---|---|---|---|---|"]
        for r in results["scaling"]:
            lines.append(f"| {r['replicas']} | {r['async_steps_per_s']:.1f} | {r['async_efficiency']:.2f} | "
                         f"{r['sync_steps_per_s']:.1f} | {r['sync_efficiency']:.2f} | {r['raw_ray_steps_per_s']:.1f} | "
                         f"{r['raw_ray_efficiency']:.2f} |")
        lines.append("")
    if "compute" in results:
        c, r = results["compute"]["digits"], results["compute"]["resnet8"]
        fmt = lambda v: "-" if v is None else f"{v:.2f} s"  # noqa: E731
        lines += ["## Real compute (1 thread per replica, 1 shard)", "",
                  f"- digits CNN, samples/s: one process (edge.Trainer) {c['single_samples_per_s']:.0f}, 2 sync replicas "
                  f"{c['sync2_samples_per_s']:.0f} ({c['speedup']:.2f}x)",
                  f"- digits CNN, time to {results['args']['target']:.0%}: one process {fmt(c['single_time_to_target_s'])}, "
                  f"2 sync replicas {fmt(c['sync2_time_to_target_s'])} from the job's start "
                  f"({fmt(c['sync2_time_to_target_without_startup_s'])} after the first step; actor start-up "
                  f"{c['startup_s']:.2f} s), {c['sync2_steps_to_target']} updates",
                  f"- ResNet-8 (32x32x3, BatchNorm), samples/s: one process {r['single_samples_per_s']:.0f}, 2 sync replicas "
                  f"{r['sync2_samples_per_s']:.0f} ({r['sync2_speedup']:.2f}x), 2 async replicas "
                  f"{r['async2_samples_per_s']:.0f} ({r['async2_speedup']:.2f}x)", ""]
    if "strategies" in results:
        lines += ["## Strategies (digits CNN, 2 shards)", "", "| strategy | replicas | accuracy | time to 97 % | updates to 97 % | wall s |",
                  "|---|---|---|---|---|---|"]
        for r in results["strategies"]:
            t = f"{r['time_to_97_s']:.1f} s" if r["time_to_97_s"] is not None else "-"
            lines.append(f"| {r['strategy']} | {r['replicas']} | {100 * r['accuracy']:.2f} % | {t} | {r['steps_to_97']} | {r['wall_s']:.1f} |")
        lines.append("")
    if "stragglers" in results:
        lines += [f"## Stragglers (one replica {results['args']['slowdown']}x slower)", "",
                  "| compute | case | step ms | vs no straggler | accuracy | late gradients dropped |",
                  "|---|---|---|---|---|---|"]
        for r in results["stragglers"]:
            accuracy = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f} %"
            lines.append(f"| {r['compute']} | {r['case']} | {r['step_ms']:.1f} | {r['vs_no_straggler']:.2f}x | {accuracy} | "
                         f"{r['late_dropped']} |")
        lines.append("")
    if "staleness" in results:
        lines += ["## Staleness (4 replicas)", "", "| strategy | updates to target | accuracy | staleness histogram | rejected |",
                  "|---|---|---|---|---|"]
        for r in results["staleness"]:
            lines.append(f"| {r['strategy']} | {r['steps_to_target']} | {100 * r['accuracy']:.2f} % | {r['staleness']} | {r['rejected_stale']} |")
        lines.append("")
    if "compression" in results:
        lines += ["## Gradient compression (sync, 2 replicas, cosine rate)", "",
                  "| optimizer | mode | bytes per push | vs none | accuracy | delta (points) |", "|---|---|---|---|---|---|"]
        for r in results["compression"]:
            lines.append(f"| {r['optimizer']} | {r['compression']} | {r['bytes_per_push']:.0f} | {r['vs_none']:.3f} | "
                         f"{100 * r['accuracy']:.2f} % | {r['accuracy_delta_points']:+.2f} |")
        lines.append("")
    if "faults" in results:
        lines += ["## Faults (sync + 1 backup, 3 replicas)", "", "| case | seed | accuracy |", "|---|---|---|"]
        for r in results["faults"]:
            lines.append(f"| {r['case']} | {r['seed']} | {100 * r['accuracy']:.2f} % |")
        lines.append("")
    return "\n".join(lines)


def plot(results, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in results.get("strategies", []):
        points = [(t, s, a) for t, s, a in r["curve"] if a is not None]
        if points:
            axes[0].plot([p[1] for p in points], [p[2] for p in points], label=r["strategy"])
            axes[1].plot([p[0] for p in points], [p[2] for p in points], label=r["strategy"])
    for ax, xlabel in zip(axes, ("updates applied", "wall time (s)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out accuracy")
        ax.set_ylim(0.8, 1.0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("digits CNN, parameter shards + replicas on Ray (2-core machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--max-replicas", type=int, default=8)
    parser.add_argument("--sleep-ms", type=float, default=100.0)
    parser.add_argument("--scaling-steps", type=int, default=20)
    parser.add_argument("--epochs", type=float, default=12)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--slowdown", type=float, default=5.0)
    parser.add_argument("--fault-runs", type=int, default=3)
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {PARTS}")
    training.ensure_ray(None, num_cpus=max(os.cpu_count() or 1, 2 * args.max_replicas + 2))
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
               "command": "python3 benchmarks/train_dist.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "args": vars(args), "date": datetime.datetime.now().isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory() as folder:
        for part in parts:
            results[part] = globals()[f"part_{part}"](args, folder)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / f"train-dist-{stamp}.json").write_text(json.dumps(results, indent=1, default=str))
    (out / f"train-dist-{stamp}.md").write_text(markdown(results))
    if "strategies" in results:
        plot(results, out / f"train-dist-{stamp}.png")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
