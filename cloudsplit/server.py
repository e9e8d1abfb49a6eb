"""The datacenter side of split inference: ``cloudsplit serve`` and ``start_server()``.

Each model is held by its SHA-256 and run with the same C runtime the device uses (``edge``;
cloudsplit.model_registry). A pool of interpreters per model lets concurrent requests run side by
side; requests that share a model and a cut are batched when the model's batch dimension is dynamic
(``batching.BatchRunner``). Every request is checked against the model before anything runs
(``validation.validate_header``): a wrong request gets INVALID_ARGUMENT with a message naming the
problem and the server keeps serving. The gRPC servicer is ``service.SplitInferenceService``. With
``--stages K`` each model runs instead on K stage workers (cloudsplit.pipeline_serving), for models
over one server's memory.

Every service the server hosts shares its port, so TLS (``ServerTLS``; mutual with a client CA),
the bearer token (``security.TokenInterceptor``) and the stream limits (``StreamGuard``) cover them
all. Beyond ``max_concurrency`` inference requests, and beyond the worker pool for any call, the
server refuses with RESOURCE_EXHAUSTED at once instead of queueing.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import logging
import os
import pathlib
import signal
import sys
import threading
from typing import Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cloudsplit import security
from cloudsplit.batching import batch_bucket
from cloudsplit.model_registry import ModelEntry, ModelRegistry, PipelineOptions, sha256_hex
from cloudsplit.protos import split_pb2_grpc as pb_grpc
from cloudsplit.security import ServerTLS
from cloudsplit.protos import DEFAULT_MAX_MESSAGE_MB, MiB
from cloudsplit.service import SERVICE_NAME, ServerOptions, SplitInferenceService
from cloudsplit.stream_guard import StreamGuard
from cloudsplit.validation import RequestError
from edge.errors import EdgeError

# Re-exported: the names callers import from this module.
__all__ = ["MiB", "ModelEntry", "ModelRegistry", "PipelineOptions", "RequestError", "SERVICE_NAME", "ServerHandle",
           "ServerOptions", "SplitInferenceService", "add_serve_parser", "batch_bucket", "main", "serve_command",
           "sha256_hex", "start_server"]


class ServerHandle:
    """A running server: ``port``, ``service``, ``stop(grace_s)``, ``wait()``."""

    def __init__(self, server: grpc.Server, port: int, service: SplitInferenceService,
                 health_servicer: health.HealthServicer, training=None, federated=None,
                 guard: StreamGuard | None = None):
        self.server = server
        self.port = port
        self.service = service
        self.health = health_servicer
        self.training = training   # the TrainingService, when enabled
        self.federated = federated   # the FederatedService, when enabled
        self.guard = guard           # the StreamGuard: ``guard.cancelled`` counts calls it cut off
        self.workers: int | None = None   # RPC worker threads; calls past them are refused
        self._stopped = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace_s: float | None = 5.0) -> None:
        """Stops accepting calls, lets in-flight ones finish for up to ``grace_s``, then cancels the rest."""
        if self._stopped:
            return
        self._stopped = True
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        self.service.registry.close()
        if self.training is not None:
            self.training.close()
        if self.federated is not None:
            self.federated.close()
        if self.guard is not None:
            self.guard.close()

    def wait(self, timeout: float | None = None) -> bool:
        return self.server.wait_for_termination(timeout)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop(0)


# Long-lived streaming calls: bounded by the stream guard's idle limit, not its call limit.
_SESSION_METHODS = frozenset({f"/{SERVICE_NAME}/InferStream", "/cloudsplit.v1.Training/WatchJob"})


def _model_sources(models) -> list[tuple[bytes, str]]:
    if isinstance(models, (bytes, bytearray, memoryview)):
        return [(bytes(models), "model")]
    if isinstance(models, (str, os.PathLike)):
        path = pathlib.Path(models)
        if path.is_dir():
            files = sorted(path.glob("*.edge"))
            if not files:
                raise FileNotFoundError(f"{path}: no .edge files to serve")
            return [(f.read_bytes(), f.name) for f in files]
        return [(path.read_bytes(), path.name)]
    sources = []
    for item in models:
        sources.extend(_model_sources(item))
    return sources


def start_server(models=(), *, port: int = 0, host: str = "127.0.0.1", threads: int = 1,
                 max_concurrency: int = 16, max_message_mb: float = DEFAULT_MAX_MESSAGE_MB, token: str | None = None,
                 batching: bool = True, max_batch: int = 16, batch_window_ms: float = 0.0,
                 batch_padding: bool = False,
                 compute_slots: int | None = None,
                 max_request_mb: float = 256.0, max_model_mb: float = 1024.0, allow_register: bool = True,
                 delay_s: float = 0.0, on_request: Callable[[str], None] | None = None,
                 training=None, federated=None, pipeline: PipelineOptions | None = None,
                 split_learning: bool = False, tls: ServerTLS | None = None, insecure: bool = False,
                 stream_idle_s: float = 10.0, max_call_s: float = 60.0) -> ServerHandle:
    """Starts a server in this process and returns once it listens.

    ``models``: a directory of .edge files, a file, model bytes, or a list of these. ``port=0`` picks a
    free port (``handle.port``). ``training``: True or a ``training_service.TrainingOptions`` adds the
    Training service (distributed training jobs on the registered models). ``federated``: True or a
    ``federated_service.FederatedOptions`` adds the Federated service (federated averaging with
    devices; it needs no Ray). ``pipeline``: serve every model through stage workers on Ray
    (cloudsplit.pipeline_serving), for models over one server's memory. ``split_learning``: adds the
    SplitLearning service (cloudsplit.split_learning: devices train their first layers, this
    server the rest), behind the same token as everything else.

    ``tls``: serve over TLS (mutual TLS when it names a client CA); every hosted service shares the
    port, so TLS and ``token`` cover them all. A non-loopback ``host`` without ``tls`` is refused
    (``security.InsecureListenError``, before anything loads or binds) unless ``insecure``.
    ``stream_idle_s`` and ``max_call_s`` bound streaming calls (``stream_guard.StreamGuard``):
    a stalled or slow client loses its call, not a worker. At most ``max_concurrency`` inference
    requests run at once and the next is refused with RESOURCE_EXHAUSTED at once; calls past the
    worker pool are refused by gRPC itself, so no call waits in a queue for a worker.
    """
    security.check_listen_address(host, tls, insecure)
    options = ServerOptions(threads=threads, max_concurrency=max_concurrency, max_message_mb=max_message_mb,
                            max_request_mb=max_request_mb, max_model_mb=max_model_mb, token=token,
                            batching=batching, max_batch=max_batch, batch_window_ms=batch_window_ms,
                            batch_padding=batch_padding,
                            compute_slots=compute_slots,
                            allow_register=allow_register, delay_s=delay_s, on_request=on_request)
    if pipeline is not None:
        if pipeline.stages < 1 or (pipeline.memory_limit is not None and pipeline.memory_limit < 1):
            raise ValueError(f"pipeline serving needs stages >= 1 and a positive memory limit, got "
                             f"{pipeline.stages} and {pipeline.memory_limit}")
        from cloudsplit.training import ensure_ray

        ensure_ray(pipeline.address)  # here, before gRPC's threads run (see the training service below)
    registry = ModelRegistry(threads, pipeline)
    try:
        for data, name in _model_sources(models):
            registry.add(data, name)
    except BaseException:
        registry.close()
        raise
    service = SplitInferenceService(registry, options)
    message_bytes = int(max_message_mb * MiB)
    grpc_options = [("grpc.max_receive_message_length", message_bytes),
                    ("grpc.max_send_message_length", message_bytes),
                    ("grpc.so_reuseport", 0)]
    guard = StreamGuard(stream_idle_s, max_call_s, sessions=_SESSION_METHODS)
    # Outermost first: the token, then admission (a refused call costs no more than its refusal),
    # then the stream guard's limits on what was admitted.
    interceptors = ([security.TokenInterceptor(token)] if token else []) + [service.admission_interceptor, guard]
    # Extra workers past the admission limit answer the refused calls and the health checks quickly.
    training_options = None
    if training:
        from cloudsplit import training_service

        training_options = training if isinstance(training, training_service.TrainingOptions) \
            else training_service.TrainingOptions()
        # Ray starts (or connects) here, in the calling thread and before gRPC's threads run:
        # starting its processes from inside an RPC handler raced the server's own threads
        # (a segmentation fault in one test run) and made the first job wait for the cluster.
        from cloudsplit.training import ensure_ray

        ensure_ray(training_options.cluster)
    watchers = training_options.max_watchers if training_options else 0
    federated_options = None
    if federated:
        from cloudsplit import federated_service

        federated_options = federated if isinstance(federated, federated_service.FederatedOptions) \
            else federated_service.FederatedOptions()
        watchers += federated_options.max_waiting   # JoinRound waits hold a thread each
    workers = max_concurrency + watchers + 8
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloudsplit-rpc")
    # Past ``workers`` calls in progress gRPC answers RESOURCE_EXHAUSTED itself instead of queueing
    # the call for a worker: under overload a refusal comes at once, never after a wait.
    server = grpc.server(executor, options=grpc_options, interceptors=interceptors,
                         maximum_concurrent_rpcs=workers)
    pb_grpc.add_SplitInferenceServicer_to_server(service, server)
    trainer_service = training_service.add_to_server(server, registry, training_options) if training_options else None
    federated_servicer = federated_service.add_to_server(server, registry, federated_options) \
        if federated_options else None
    split_servicer = None
    if split_learning:
        from cloudsplit import split_learning as split_learning_service

        split_servicer = split_learning_service.add_split_learning_servicer(server, threads=threads)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = server.add_secure_port(address, tls.credentials()) if tls is not None \
            else server.add_insecure_port(address)
    except RuntimeError:   # grpcio raises where older releases returned 0
        bound = 0
    if bound == 0:
        guard.close()
        registry.close()
        hint = " over TLS: the address is taken or unavailable, or the certificate chain and key are not a " \
               "matching PEM pair" if tls is not None else ""
        raise OSError(f"cannot listen on {address}{hint}")
    server.start()
    for name in ("", SERVICE_NAME) + ((training_service.SERVICE_NAME,) if trainer_service else ()) \
            + ((federated_service.SERVICE_NAME,) if federated_servicer else ()) \
            + (("cloudsplit.v1.SplitLearning",) if split_servicer else ()):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    handle = ServerHandle(server, bound, service, health_servicer, trainer_service, federated_servicer, guard)
    handle.workers = workers
    return handle


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Adds ``serve`` to a ``cloudsplit`` argparse subparsers object; ``args.func(args)`` runs it."""
    from cloudsplit.cli import parse_bytes
    parser = subparsers.add_parser(
        "serve", help="host models for split inference over gRPC",
        description="Serves the .edge models in a directory for split inference. It listens on 127.0.0.1 unless "
                    "--host says otherwise; beyond loopback it needs TLS (--tls-cert, --tls-key) or --insecure. "
                    "The bearer token comes from --token-file or $CLOUDSPLIT_TOKEN, never the command line.")
    parser.add_argument("--models", required=True, help="directory of .edge files (each served by its SHA-256)")
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                        "only); any other needs TLS or --insecure")
    parser.add_argument("--threads", type=int, default=1, help="threads per interpreter")
    parser.add_argument("--max-concurrency", type=int, default=16, help="requests in flight before "
                        "RESOURCE_EXHAUSTED")
    parser.add_argument("--max-message-mb", type=float, default=DEFAULT_MAX_MESSAGE_MB, help="largest single gRPC message")
    parser.add_argument("--max-request-mb", type=float, default=256.0, help="largest request (all its tensors)")
    parser.add_argument("--stream-idle-s", type=float, default=10.0, help="cancel a streaming call whose client "
                        "sends no message for this long (default 10)")
    parser.add_argument("--max-call-s", type=float, default=60.0, help="cancel a streaming call still running after "
                        "this long, sessions (InferStream, WatchJob) excepted (default 60)")
    secure = parser.add_argument_group("security", "TLS and the bearer token; they cover every service served")
    secure.add_argument("--tls-cert", metavar="PEM", help="serve over TLS with this certificate chain")
    secure.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    secure.add_argument("--client-ca", metavar="PEM", help="mutual TLS: accept only clients whose certificate this "
                        "authority signed")
    secure.add_argument("--insecure", action="store_true", help="allow plaintext on a non-loopback --host (tokens "
                        "and tensors readable on the network)")
    security.add_token_arguments(secure, "require 'authorization: Bearer TOKEN' on every call but health checks")
    # Off by default: measured on a 2-core x86 with warm interpreters per batch size (benchmarks/README.md,
    # "Server batching"), batching changed throughput by -7 % to +4 % at 8-16 clients (an MLP,
    # MobileNetV2's tail and second half): a stacked batch saves ~7 % of the compute, and the CPU
    # kernels already run a batch-1 layer near their best.
    parser.add_argument("--batching", dest="batching", action="store_true", default=False,
                        help="batch concurrent requests that share a model and cut (dynamic-batch models only)")
    parser.add_argument("--no-batching", dest="batching", action="store_false", help="run every request on its own "
                        "(the default)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--batch-padding", action="store_true", help="pad a batch up to the next power of two "
                        "(default: split it into power-of-two batches run in turn)")
    parser.add_argument("--batch-window-ms", type=float, default=0.0,
                        help="how long a batch waits for more requests before it runs (default: not at all)")
    parser.add_argument("--no-register", action="store_true", help="refuse model uploads")
    parser.add_argument("--grace-s", type=float, default=10.0, help="how long in-flight requests may finish "
                        "after SIGTERM/SIGINT")
    staged = parser.add_argument_group("pipeline serving", "models over one server's memory, run by stage "
                                       "workers on Ray")
    staged.add_argument("--stages", type=int, help="run every model as K stages, one Ray actor each, balanced by "
                        "the ops' FLOPs")
    staged.add_argument("--memory-limit", type=parse_bytes, help="bytes per stage worker (e.g. 2GB): the stages are "
                        "planned to fit it and the start fails if one does not")
    training = parser.add_argument_group("training", "the Training service (distributed training on Ray)")
    training.add_argument("--training", action="store_true", help="serve training jobs on the registered models")
    training.add_argument("--training-data", default=".", help="data paths of StartJob resolve inside this "
                          "directory (default: the current one)")
    training.add_argument("--max-jobs", type=int, default=2, help="training jobs running at once (default 2)")
    training.add_argument("--checkpoint-root", help="job checkpoints go to DIR/<job id> (default: temporary)")
    training.add_argument("--ray-address", help="join this Ray cluster (default: start one on loopback)")
    training.add_argument("--federated", action="store_true", help="serve federated jobs (federated averaging "
                          "with devices) on the registered models")
    training.add_argument("--split-learning", action="store_true", help="serve split learning: devices train the "
                          "layers before a cut, this server the rest (cloudsplit.client.SplitTrainer)")
    parser.set_defaults(func=serve_command)
    return parser


def _training_options(args):
    if not args.training:
        return None
    from cloudsplit.training_service import TrainingOptions

    if args.max_jobs < 1:
        raise ValueError(f"--max-jobs must be >= 1, got {args.max_jobs}")
    if not os.path.isdir(args.training_data):
        raise ValueError(f"--training-data {args.training_data}: not a directory")
    return TrainingOptions(max_jobs=args.max_jobs, data_root=os.path.abspath(args.training_data),
                           checkpoint_root=args.checkpoint_root, cluster=args.ray_address)


def _pipeline_options(args):
    if args.stages is None:
        if args.memory_limit is not None:
            raise ValueError("--memory-limit goes with --stages")
        return None
    return PipelineOptions(stages=args.stages, memory_limit=args.memory_limit, address=args.ray_address)


def _federated_options(args):
    if not args.federated:
        return None
    from cloudsplit.federated_service import FederatedOptions

    return FederatedOptions(data_root=os.path.abspath(args.training_data))


def _server_tls(args) -> ServerTLS | None:
    if args.tls_cert is None and args.tls_key is None:
        if args.client_ca is not None:
            raise ValueError("--client-ca needs TLS: give --tls-cert and --tls-key too")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    return ServerTLS.from_files(args.tls_cert, args.tls_key, args.client_ca)


def serve_command(args) -> int:
    try:
        tls = _server_tls(args)
        token = security.read_token(args.token_file)
        security.check_listen_address(args.host, tls, args.insecure)
        handle = start_server(args.models, port=args.port, host=args.host, threads=args.threads,
                              max_concurrency=args.max_concurrency, max_message_mb=args.max_message_mb,
                              max_request_mb=args.max_request_mb, token=token, tls=tls, insecure=args.insecure,
                              stream_idle_s=args.stream_idle_s, max_call_s=args.max_call_s,
                              batching=args.batching, max_batch=args.max_batch, batch_padding=args.batch_padding,
                              batch_window_ms=args.batch_window_ms,
                              allow_register=not args.no_register, training=_training_options(args),
                              federated=_federated_options(args), pipeline=_pipeline_options(args),
                              split_learning=args.split_learning)
    except (OSError, EdgeError, ValueError, MemoryError) as error:
        print(f"cloudsplit serve: {error}", file=sys.stderr)
        return 1
    stopping = threading.Event()

    def on_signal(signum, frame):
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    for entry in handle.service.registry.entries():
        batch = "dynamic batch" if entry.batch_dimension_dynamic else "fixed batch"
        staged = "" if entry.stages is None else \
            f", {len(entry.stages.actors)} stages at ops {entry.stages.bounds[:-1]} holding " \
            + "/".join(str(b) for b in entry.stages.memory) + " bytes"
        print(f"  {entry.sha256}  {entry.name}  ({len(entry.ops)} ops, {batch}{staged})")
    print(f"cloudsplit serve: listening on {args.host}:{handle.port}"
          f"{' over mutual TLS' if tls and tls.client_ca else ' over TLS' if tls else ' in plaintext'}"
          f"{' (token required)' if token else ''}", flush=True)
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(f"cloudsplit serve: shutting down (up to {args.grace_s:g} s for requests in flight)", flush=True)
    handle.stop(args.grace_s)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudsplit.server")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(subparsers)
    args = parser.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
