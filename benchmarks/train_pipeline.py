"""Pipeline-parallel training, measured: stage actors on an embedded Ray cluster (127.0.0.1).

    python3 benchmarks/train_pipeline.py --out benchmarks/results

Parts (tables printed; all written to <out>/train-pipeline-<stamp>.{json,md}):

- bubble: compute stood in by fixed sleeps (labelled as such: --forward-ms per stage forward and
  twice that per backward) on the small residual MLP of the tests, K = 2 and 4 stages, GPipe and
  1F1B, M = 1, 2, 4, 8 micro-batches. Pipeline efficiency = the stages' busy time / (K x wall
  time) per batch, against GPipe's formula M / (M + K - 1).
- compute: real compute (the C runtime, 1 thread per stage) on an MLP of --layers FullyConnected
  layers --width wide, K = 1 (one actor: the same code path, no pipeline) and K = 2 stages on this
  2-core machine: samples/s; the K = 2 rows say what a pipeline gains when each stage has a core.
- memory: the tensors each stage keeps per micro-batch in flight, peak over a batch (measured by
  the actors), GPipe against 1F1B, with and without recomputation, K = 4, M = 8. With
  recomputation a stage keeps only what it received; without, also the activations its backward
  reads. Besides one micro-batch's working set, this is the pipeline's activation memory.
- limit: the --layers x --width MLP trained with Adam on one worker, then under a memory limit of a
  quarter of what that worker held: the planner (cloudsplit.partition.solve_stages, training,
  costs measured here) picks the fewest stages that fit, the pipeline trains on the same batches,
  and the loss curves are compared.
- balance: the K-way planner (training, K = 2, 4, 8) on MobileNetV2 (a chain: the plan is exact),
  ResNet-18 and a 6-layer BERT encoder (DAGs: the plan is exact among partitions contiguous in op
  order), op times measured here. Its slowest stage against a lower bound on any partition's:
  max(total / K, the slowest op), with a free link and with 10 Gbit/s.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _residual_stages(stages: int, micro: int, recompute: bool = True) -> list[bytes]:
    from converter.autodiff.stages import stage_files
    from tests.fixtures.pipeline import cuts, residual_mlp

    graph, names = residual_mlp(batch=micro)
    return stage_files(graph, cuts(names, stages), optimizer="sgd", lr=0.01, recompute=recompute)


def _mlp(layers: int, width: int, batch: int):
    from converter.builder import GraphBuilder

    rng = np.random.default_rng(3)
    b = GraphBuilder("deep_mlp")
    h = b.input("x", (batch, width))
    cuts = []
    for i in range(layers):
        w = rng.standard_normal((width, width)) / np.sqrt(width)
        h = b.FullyConnected(h, b.constant(f"fc{i}.weight", w), b.constant(f"fc{i}.bias", np.zeros(width)),
                             activation=("Relu", 0.0, 0.0))
        cuts.append(h)
    logits = b.FullyConnected(h, b.constant("head.weight", rng.standard_normal((10, width)) / np.sqrt(width)),
                              b.constant("head.bias", np.zeros(10)))
    b.output(b.Softmax(logits, axis=1), name="probs")
    return b.build(), cuts


def _batches(count: int, batch: int, features: int, classes: int):
    rng = np.random.default_rng(1)
    return [({"x": rng.standard_normal((batch, features)).astype(np.float32)},
             rng.integers(0, classes, batch).astype(np.int32)) for _ in range(count)]


def _run(trainer, batches, warmup: int = 1) -> tuple[float, list[dict]]:
    for inputs, labels in batches[:warmup]:
        trainer.step(inputs, labels)
    trainer.reset_stats()
    start = time.perf_counter()
    for inputs, labels in batches[warmup:]:
        trainer.step(inputs, labels)
    return time.perf_counter() - start, trainer.stats()


def bubble(args) -> list[dict]:
    from cloudsplit.pipeline import PipelineTrainer

    rows = []
    delay = (args.forward_ms / 1e3, 2 * args.forward_ms / 1e3)
    for k in (2, 4):
        for m in (1, 2, 4, 8):
            files = _residual_stages(k, 4)
            batches = _batches(args.steps + 1, 4 * m, 6, 3)
            for kind in ("gpipe", "1f1b"):
                with PipelineTrainer(files, micro_batches=m, schedule=kind, delay_s=delay) as trainer:
                    wall, stats = _run(trainer, batches)
                efficiency = sum(s["busy_s"] for s in stats) / (k * wall)
                row = {"stages": k, "micro_batches": m, "schedule": kind, "wall_s_per_batch": wall / args.steps,
                       "efficiency": efficiency, "gpipe_formula": m / (m + k - 1)}
                rows.append(row)
                print(f"bubble  K={k} M={m} {kind:<5}: {row['wall_s_per_batch'] * 1e3:7.1f} ms/batch, efficiency "
                      f"{efficiency:.2f} (formula {row['gpipe_formula']:.2f})", flush=True)
    return rows


def compute(args) -> list[dict]:
    from cloudsplit.pipeline import PipelineTrainer
    from converter.autodiff.stages import stage_files

    rows = []
    micro = args.micro_batch
    graph, cut_names = _mlp(args.layers, args.width, micro)
    batches = _batches(args.steps + 1, micro * args.micro_batches, args.width, 10)
    for k, recompute in ((1, True), (2, True), (2, False)):
        cuts = [] if k == 1 else [[cut_names[args.layers // 2 - 1]]]
        files = stage_files(graph, cuts, optimizer="sgd", lr=0.01, recompute=recompute)
        with PipelineTrainer(files, micro_batches=args.micro_batches, schedule="1f1b") as trainer:
            wall, stats = _run(trainer, batches)
        samples = args.steps * micro * args.micro_batches
        row = {"stages": k, "recompute": recompute, "samples_per_s": samples / wall,
               "busy_s": [s["busy_s"] for s in stats], "wall_s": wall}
        rows.append(row)
        print(f"compute K={k}{'' if recompute else ' no recompute'}: {row['samples_per_s']:.0f} samples/s (busy "
              f"{', '.join(f'{b:.2f}' for b in row['busy_s'])} s of {wall:.2f} s)", flush=True)
    return rows


def memory(args) -> list[dict]:
    from cloudsplit.pipeline import PipelineTrainer

    rows = []
    k, m = 4, 8
    batches = _batches(2, 4 * m, 6, 3)
    for recompute in (True, False):
        files = _residual_stages(k, 4, recompute)
        for kind in ("gpipe", "1f1b"):
            with PipelineTrainer(files, micro_batches=m, schedule=kind) as trainer:
                _, stats = _run(trainer, batches)
            row = {"schedule": kind, "recompute": recompute, "peak_kept_bytes": [s["peak_kept_bytes"] for s in stats]}
            rows.append(row)
            print(f"memory  {kind:<5} {'recompute' if recompute else 'keep':<9}: kept per stage "
                  f"{row['peak_kept_bytes']} bytes", flush=True)
    return rows


def limit(args) -> dict:
    import edge
    from cloudsplit import costs, partition
    from cloudsplit.pipeline import PipelineTrainer
    from converter.autodiff.stages import stage_files
    from converter.writer import write_model

    micro, m = args.micro_batch, args.micro_batches
    graph, _ = _mlp(args.layers, args.width, micro)
    batches = _batches(args.steps, micro * m, args.width, 10)
    with PipelineTrainer(stage_files(graph, [], optimizer="adam", lr=1e-3), micro_batches=m) as one:
        reference = [one.step(x, y) for x, y in batches]
        whole = one.stats()[0]["memory_bytes"]
    budget = whole // 4
    data = write_model(graph)
    op_ms = costs.measure_op_ms(data)
    with edge.Interpreter(model_content=data) as interpreter:
        interpreter.allocate_tensors()
        model_costs = costs.costs_from_interpreter(interpreter, op_ms, op_ms)
        details = interpreter.get_tensor_details()
    for k in range(2, len(op_ms) + 1):
        try:
            plan = partition.solve_stages(model_costs, k, link_bps=10e9, memory_limit=budget, training=True,
                                          optimizer_slots=2, activation_copies=m)
        except ValueError:
            continue
        cuts = [[details[t]["name"] for t in partition.cut_tensors(model_costs, stage.ops[-1] + 1)]
                for stage in plan.stages[:-1]]
        try:
            with PipelineTrainer(stage_files(graph, cuts, optimizer="adam", lr=1e-3), micro_batches=m,
                                 memory_limit=budget) as pipe:
                losses = [pipe.step(x, y) for x, y in batches]
                held = [s["memory_bytes"] for s in pipe.stats()]
            break
        except MemoryError as error:  # the planner's estimate fit, the runtime's accounting did not
            print(f"limit   K={k}: {error}", flush=True)
    else:
        raise SystemExit("no stage count fits the limit")
    gap = max(abs(a - b) / abs(b) for a, b in zip(losses, reference))
    row = {"whole_bytes": whole, "limit_bytes": budget, "stages": k, "planned_bytes": [s.memory_bytes for s in plan.stages],
           "held_bytes": held, "loss_one_worker": reference, "loss_pipeline": losses, "max_relative_loss_gap": gap}
    print(f"limit   one worker {whole} bytes; limit {budget}; {k} stages holding {held} bytes; loss curves within "
          f"{gap:.1e} relative over {len(batches)} steps", flush=True)
    return row


def balance(args) -> list[dict]:
    import converter
    import edge
    from cloudsplit import costs, partition
    from tests.fixtures import models

    nets = {"MobileNetV2": models.mobilenet_v2(), "ResNet-18": models.resnet18(),
            "BERT 6x384, 128 tokens": models.bert_encoder(layers=6, hidden=384, heads=12, batch=1, tokens=128)}
    rows = []
    for name, onnx_model in nets.items():
        data = converter.convert(onnx_model).data
        op_ms = costs.measure_op_ms(data, runs=3)
        with edge.Interpreter(model_content=data) as interpreter:
            interpreter.allocate_tensors()
            model_costs = costs.costs_from_interpreter(interpreter, op_ms, op_ms)
        bound_scale = 3.0  # forward + backward (backward_factor 2)
        for link in (float("inf"), 10e9):
            for k in (2, 4, 8):
                plan = partition.solve_stages(model_costs, k, link_bps=min(link, 1e18), training=True)
                bound = max(sum(op_ms) * bound_scale / k, max(op_ms) * bound_scale)
                row = {"model": name, "ops": len(op_ms), "link": "free" if link == float("inf") else "10 Gbit/s",
                       "stages": k, "method": plan.method, "bottleneck_ms": plan.bottleneck_ms, "bound_ms": bound}
                rows.append(row)
                print(f"balance {name} K={k} link {row['link']}: slowest stage {plan.bottleneck_ms:.2f} ms, bound "
                      f"{bound:.2f} ms ({plan.bottleneck_ms / bound:.3f}x)", flush=True)
    return rows


def markdown(report: dict) -> str:
    lines = [f"# Pipeline training, {report['date']}", "", f"Machine: {report['machine']}", ""]
    if "bubble" in report:
        lines += ["## Bubble (compute stood in by sleeps: forward "
                  f"{report['args']['forward_ms']} ms, backward twice that, per stage)", "",
                  "| K | M | schedule | ms / batch | efficiency | GPipe formula M/(M+K-1) |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['stages']} | {r['micro_batches']} | {r['schedule']} | {r['wall_s_per_batch'] * 1e3:.1f} | "
                  f"{r['efficiency']:.2f} | {r['gpipe_formula']:.2f} |" for r in report["bubble"]]
        lines.append("")
    if "compute" in report:
        a = report["args"]
        lines += [f"## Real compute ({a['layers']} FullyConnected {a['width']} wide, micro-batch {a['micro_batch']}, "
                  f"{a['micro_batches']} per batch, 1F1B, 1 thread per stage)", "",
                  "| stages | recompute | samples/s | busy s per stage | wall s |", "|---|---|---|---|---|"]
        lines += [f"| {r['stages']} | {'yes' if r['recompute'] else 'no'} | {r['samples_per_s']:.0f} | "
                  f"{', '.join(f'{b:.2f}' for b in r['busy_s'])} | {r['wall_s']:.2f} |" for r in report["compute"]]
        lines.append("")
    if "memory" in report:
        lines += ["## Kept activations per stage (K = 4, M = 8, peak bytes)", "",
                  "| schedule | recompute | stage 0 | 1 | 2 | 3 |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['schedule']} | {'yes' if r['recompute'] else 'no'} | "
                  + " | ".join(str(b) for b in r["peak_kept_bytes"]) + " |" for r in report["memory"]]
        lines.append("")
    if "balance" in report:
        lines += ["## Planner balance (training; slowest stage / max(total / K, slowest op))", "",
                  "| model | ops | link | K = 2 | K = 4 | K = 8 |", "|---|---|---|---|---|---|"]
        groups: dict = {}
        for r in report["balance"]:
            groups.setdefault((r["model"], r["ops"], r["link"]), {})[r["stages"]] = r["bottleneck_ms"] / r["bound_ms"]
        lines += [f"| {m} | {n} | {link} | " + " | ".join(f"{g[k]:.3f}" for k in (2, 4, 8)) + " |"
                  for (m, n, link), g in groups.items()]
        lines.append("")
    if "limit" in report:
        r = report["limit"]
        lines += ["## Over one worker's memory (Adam)", "",
                  f"One worker held {r['whole_bytes']} bytes; limit {r['limit_bytes']} (a quarter); the planner chose "
                  f"{r['stages']} stages, planned {r['planned_bytes']}, held {r['held_bytes']} bytes; loss curves "
                  f"within {r['max_relative_loss_gap']:.1e} relative over {len(r['loss_pipeline'])} steps."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="bubble,compute,memory,limit,balance")
    parser.add_argument("--steps", type=int, default=5, help="timed batches per configuration")
    parser.add_argument("--forward-ms", type=float, default=20.0, help="bubble part: sleep per forward")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--micro-batches", type=int, default=8)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    from cloudsplit.training.engine import ensure_ray

    ensure_ray(None, num_cpus=4)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    report = {"date": stamp, "args": vars(args) | {"out": str(args.out)},
              "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"}
    parts = {"bubble": bubble, "compute": compute, "memory": memory, "limit": limit, "balance": balance}
    for name in args.parts.split(","):
        report[name] = parts[name](args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"train-pipeline-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
