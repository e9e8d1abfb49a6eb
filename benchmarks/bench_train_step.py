"""Training-step throughput of the C runtime against PyTorch on the CPU: the worker speed of
distributed training (cloudsplit.training replicas run the same `train` signature).

    python3 benchmarks/bench_train_step.py --out benchmarks/results

For each network, one optimizer step (forward, backward, Adam update) on a fixed batch of 32,
samples/s, edge and PyTorch with the same network, the same initial weights, the same batches and
the same optimizer (Adam, lr 1e-3):

  digits    the CNN of tests/fixtures/digits.py (conv 16 - pool - conv 32 - pool - dense 64 - head
            10) on 8x8x1 images;
  resnet8   32x32x3 input, conv stem 16 ch + BatchNorm + ReLU, three stages of one basic residual
            block (conv-BN-ReLU-conv-BN + shortcut, 1x1 conv-BN where the shape changes) at 16 / 32
            / 64 channels with stride 2 between stages, global average pool, FC 10; BatchNorm in
            training mode (batch statistics, running statistics updated) on both sides.

Random data (throughput only). Each (network, runtime, threads) runs in its own process so no
thread pool of one disturbs the other; processes take turns for --rounds rounds and the figure
is the median over rounds of each process's median step rate over --steps timed steps (after
--warmup untimed ones). The edge figure is the step through edge.Trainer.train_step (set the
batch, invoke `train`, read the loss), the PyTorch one zero_grad + forward + cross-entropy +
backward + step. PyTorch is a benchmark-only dependency: without it the torch columns are left
out. Results: <out>/train-step-<date>.json and .md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge.measure import cpu_name  # noqa: E402

BATCH = 32
CLASSES = 10
LR = 1e-3
NETWORKS = ("digits", "resnet8")
RESNET_WIDTHS = (16, 32, 64)


# ---- the ResNet-8-style network: weights shared by both runtimes ----

def resnet8_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """He-normal convs [O, KH, KW, I] (NHWC runtime layout), BatchNorm scale 1 / bias 0 / mean 0 /
    var 1, Glorot head [out, in]."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}

    def conv(name, cin, cout, k):
        weights[f"{name}/weights"] = (rng.standard_normal((cout, k, k, cin)) * math.sqrt(2.0 / (k * k * cin))
                                      ).astype(np.float32)

    def bn(name, c):
        weights[f"{name}/scale"] = np.ones(c, np.float32)
        weights[f"{name}/bias"] = np.zeros(c, np.float32)
        weights[f"{name}/mean"] = np.zeros(c, np.float32)
        weights[f"{name}/var"] = np.ones(c, np.float32)

    conv("stem", 3, RESNET_WIDTHS[0], 3)
    bn("stem/bn", RESNET_WIDTHS[0])
    cin = RESNET_WIDTHS[0]
    for stage, width in enumerate(RESNET_WIDTHS):
        conv(f"stage{stage}/conv1", cin, width, 3)
        bn(f"stage{stage}/bn1", width)
        conv(f"stage{stage}/conv2", width, width, 3)
        bn(f"stage{stage}/bn2", width)
        if stage > 0:
            conv(f"stage{stage}/shortcut", cin, width, 1)
            bn(f"stage{stage}/shortcut_bn", width)
        cin = width
    bound = math.sqrt(6.0 / (cin + CLASSES))
    weights["head/weights"] = rng.uniform(-bound, bound, (CLASSES, cin)).astype(np.float32)
    weights["head/bias"] = np.zeros(CLASSES, np.float32)
    return weights


def resnet8_graph(batch: int, weights: dict[str, np.ndarray]):
    from converter.builder import GraphBuilder

    b = GraphBuilder("resnet8")
    x = b.input("image", (batch, 32, 32, 3))
    const = lambda name: b.constant(name, weights[name])  # noqa: E731

    def conv(y, name, stride, k):
        pad = k // 2
        return b.Conv2D(y, const(f"{name}/weights"), strides=(stride, stride), pads=(pad, pad, pad, pad),
                        dilations=(1, 1), groups=1, layout="NHWC")

    def bn(y, name):
        return b.BatchNorm(y, const(f"{name}/scale"), const(f"{name}/bias"), const(f"{name}/mean"),
                           const(f"{name}/var"), epsilon=1e-5, layout="NHWC")

    y = b.Relu(bn(conv(x, "stem", 1, 3), "stem/bn"))
    for stage in range(len(RESNET_WIDTHS)):
        stride = 1 if stage == 0 else 2
        z = b.Relu(bn(conv(y, f"stage{stage}/conv1", stride, 3), f"stage{stage}/bn1"))
        z = bn(conv(z, f"stage{stage}/conv2", 1, 3), f"stage{stage}/bn2")
        shortcut = y if stage == 0 else bn(conv(y, f"stage{stage}/shortcut", stride, 1), f"stage{stage}/shortcut_bn")
        y = b.Relu(b.Add(z, shortcut))
    y = b.ReduceMean(y, axes=(1, 2), keepdims=False)
    b.output(b.FullyConnected(y, const("head/weights"), const("head/bias")), name="logits")
    return b.build()


def _torch_resnet8(weights: dict[str, np.ndarray]):
    import torch
    import torch.nn.functional as F
    from torch import nn

    def conv(name, cin, cout, k, stride):
        layer = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights[f"{name}/weights"].transpose(0, 3, 1, 2))))
        return layer

    def bn(c):  # scale 1, bias 0, mean 0, var 1: PyTorch's own initial values
        return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)

    class Block(nn.Module):
        def __init__(self, stage, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = conv(f"stage{stage}/conv1", cin, cout, 3, stride), bn(cout)
            self.conv2, self.bn2 = conv(f"stage{stage}/conv2", cout, cout, 3, 1), bn(cout)
            self.shortcut = (nn.Sequential(conv(f"stage{stage}/shortcut", cin, cout, 1, stride), bn(cout))
                             if stage > 0 else nn.Identity())

        def forward(self, x):
            z = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(z)) + self.shortcut(x))

    class ResNet8(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.stem_bn = conv("stem", 3, RESNET_WIDTHS[0], 3, 1), bn(RESNET_WIDTHS[0])
            blocks, cin = [], RESNET_WIDTHS[0]
            for stage, width in enumerate(RESNET_WIDTHS):
                blocks.append(Block(stage, cin, width, 1 if stage == 0 else 2))
                cin = width
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Linear(cin, CLASSES)
            with torch.no_grad():
                self.head.weight.copy_(torch.from_numpy(weights["head/weights"]))
                self.head.bias.copy_(torch.from_numpy(weights["head/bias"]))

        def forward(self, x):
            y = self.blocks(F.relu(self.stem_bn(self.stem(x))))
            return self.head(y.mean(dim=(2, 3)))

    return ResNet8()


# ---- per network: the edge model, the torch module, the input shape ----

def _network(name: str, seed: int):
    """(edge graph, torch module factory, NHWC input shape)."""
    from tests.fixtures import digits

    if name == "digits":
        weights = digits.cnn_weights(seed=seed)
        graph = digits.digits_cnn(batch=BATCH, weights=weights)

        def torch_module():
            sys.path.insert(0, str(REPO / "benchmarks"))
            from train_digits import torch_network

            return torch_network(weights, (16, 32), 64)

        return graph, torch_module, (BATCH, 8, 8, 1)
    weights = resnet8_weights(seed)
    return resnet8_graph(BATCH, weights), lambda: _torch_resnet8(weights), (BATCH, 32, 32, 3)


def _batches(shape, count: int, seed: int):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape).astype(np.float32), rng.integers(0, CLASSES, shape[0]).astype(np.int32))
            for _ in range(count)]


def edge_worker(args) -> dict:
    import edge
    from tests.fixtures import digits

    graph, _, shape = _network(args.network, args.seed)
    batches = _batches(shape, 8, args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        path = digits.write_trainable(graph, pathlib.Path(scratch) / f"{args.network}.edge", loss="cross_entropy",
                                      optimizer="adam", lr=LR)
        trainer = edge.Trainer(path, num_threads=args.threads)
        for k in range(args.warmup):
            trainer.train_step(*batches[k % len(batches)])
        times = []
        for k in range(args.steps):
            x, y = batches[k % len(batches)]
            start = time.perf_counter()
            trainer.train_step(x, y)
            times.append(time.perf_counter() - start)
    return {"edge_isa": edge.runtime_isa(), "step_s": times}


def torch_worker(args) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    _, torch_module, shape = _network(args.network, args.seed)
    model = torch_module()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    batches = [(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y.astype(np.int64)))
               for x, y in _batches(shape, 8, args.seed)]

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return float(loss)

    for k in range(args.warmup):
        step(*batches[k % len(batches)])
    times = []
    for k in range(args.steps):
        x, y = batches[k % len(batches)]
        start = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - start)
    return {"torch_version": torch.__version__, "step_s": times}


WORKERS = {"edge": edge_worker, "torch": torch_worker}


def _run_worker(runtime: str, network: str, threads: int, args) -> dict | None:
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", runtime, "--network", network,
               "--threads", str(threads), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--seed", str(args.seed)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode != 0:
        print(f"{runtime} {network} worker ({threads} threads) failed:\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--network", choices=NETWORKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.threads = args.threads[0]
        result = WORKERS[args.worker](args)
        print(json.dumps(result))
        return

    runtimes = ["edge"] + (["torch"] if _torch_available() else [])
    rates: dict[tuple[str, str, int], list[float]] = {}
    versions: dict[str, str] = {}
    for round_index in range(args.rounds):
        for network in args.networks:
            for threads in args.threads:
                for runtime in runtimes:
                    result = _run_worker(runtime, network, threads, args)
                    if result is None:
                        continue
                    versions.update({k: v for k, v in result.items() if k != "step_s"})
                    rate = BATCH / statistics.median(result["step_s"])
                    rates.setdefault((network, runtime, threads), []).append(rate)
                    print(f"round {round_index + 1}/{args.rounds} {network:8s} {runtime:5s} {threads} thread(s): "
                          f"{rate:9.0f} samples/s", file=sys.stderr)

    rows = []
    for network in args.networks:
        for threads in args.threads:
            row = {"network": network, "threads": threads, "batch": BATCH}
            for runtime in runtimes:
                got = rates.get((network, runtime, threads))
                row[f"{runtime}_samples_per_s"] = statistics.median(got) if got else None
                row[f"{runtime}_rounds"] = got or []
            edge_rate, torch_rate = row.get("edge_samples_per_s"), row.get("torch_samples_per_s")
            row["edge_over_torch"] = edge_rate / torch_rate if edge_rate and torch_rate else None
            # Each round's edge and torch processes ran back to back: their ratio is the figure least
            # disturbed by whatever else the machine was doing at the time.
            pairs = [e / t for e, t in zip(row.get("edge_rounds", []), row.get("torch_rounds", [])) if e and t]
            row["edge_over_torch_paired"] = statistics.median(pairs) if pairs else None
            rows.append(row)

    date = datetime.date.today().isoformat()
    command = "python3 benchmarks/bench_train_step.py " + " ".join(sys.argv[1:])
    report = {"date": date, "command": command.strip(), "machine": cpu_name(),
              "cpus": os.cpu_count(), "optimizer": f"adam lr={LR}", "batch": BATCH, "rounds": args.rounds,
              "steps": args.steps, "warmup": args.warmup, "versions": versions, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"train-step-{date}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Training step: edge vs PyTorch ({date})", "",
             f"`{report['command']}` — batch {BATCH}, Adam, median of {args.rounds} rounds "
             f"(each a process's median over {args.steps} steps), {report['cpus']} CPUs, {versions}", "",
             "| network | threads | edge samples/s | PyTorch samples/s | edge / PyTorch | median of per-round ratios |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        fmt = lambda v: f"{v:,.0f}" if v else "-"  # noqa: E731
        ratio = f"{row['edge_over_torch']:.2f}x" if row["edge_over_torch"] else "-"
        paired = f"{row['edge_over_torch_paired']:.2f}x" if row["edge_over_torch_paired"] else "-"
        lines.append(f"| {row['network']} | {row['threads']} | {fmt(row.get('edge_samples_per_s'))} | "
                     f"{fmt(row.get('torch_samples_per_s'))} | {ratio} | {paired} |")
    (args.out / f"train-step-{date}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
