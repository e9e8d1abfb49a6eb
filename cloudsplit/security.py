"""Transport security for every cloudsplit server and client: TLS, the bearer token, and the rule
that a server leaves loopback only under TLS.

One channel-making function (``make_channel``) serves every client in cloudsplit (``SplitRunner``'s
connection, the federated and split-learning clients, ``cloudsplit train --server``), so they all
speak TLS the same way. The token travels as ``authorization: Bearer <token>`` metadata and is
read from a file or ``$CLOUDSPLIT_TOKEN``, never from a command line (which every user of the machine
can read in the process list); the server compares it in constant time (``TokenInterceptor``).
Device code imports this module, so it needs nothing beyond grpcio and the standard library.
"""
from __future__ import annotations

import argparse
import hmac
import ipaddress
import os
import pathlib
from dataclasses import dataclass
from typing import Sequence

import grpc

from cloudsplit.protos import DEFAULT_MAX_MESSAGE_MB, MiB

TOKEN_ENV = "CLOUDSPLIT_TOKEN"


def _read(path) -> bytes | None:
    return None if path is None else pathlib.Path(path).read_bytes()


@dataclass(frozen=True)
class ClientTLS:
    """How a client checks the server, and how it proves itself under mutual TLS. PEM bytes.

    ``ca_cert``: the certificate authority the server's certificate must chain to (None: the
    system's roots). ``client_cert`` and ``client_key`` (both or neither): this client's identity,
    for a server started with ``--client-ca``. ``server_name``: the name the server's certificate
    must carry, when it differs from the host in the address (an address by IP, a tunnel)."""

    ca_cert: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    server_name: str | None = None

    def __post_init__(self):
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("a client certificate needs its key and a key its certificate: give both or neither")

    @classmethod
    def from_files(cls, ca_cert=None, client_cert=None, client_key=None, server_name: str | None = None) -> "ClientTLS":
        return cls(_read(ca_cert), _read(client_cert), _read(client_key), server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca_cert, private_key=self.client_key,
                                            certificate_chain=self.client_cert)


@dataclass(frozen=True)
class ServerTLS:
    """The server's certificate chain and key (PEM); with ``client_ca``, only clients presenting a
    certificate signed by that authority complete the handshake (mutual TLS)."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None

    @classmethod
    def from_files(cls, cert_chain, private_key, client_ca=None) -> "ServerTLS":
        return cls(_read(cert_chain), _read(private_key), _read(client_ca))

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.private_key, self.cert_chain)], root_certificates=self.client_ca,
                                           require_client_auth=self.client_ca is not None)


def make_channel(address: str, tls: ClientTLS | None = None, *, max_message_mb: float = DEFAULT_MAX_MESSAGE_MB,
                 options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
    """A channel to ``address``: TLS when ``tls`` is given, plaintext otherwise, with both message
    limits at ``max_message_mb`` and the caller's extra ``options``."""
    message_bytes = int(max_message_mb * MiB)
    channel_options = [("grpc.max_receive_message_length", message_bytes),
                       ("grpc.max_send_message_length", message_bytes), *options]
    if tls is None:
        return grpc.insecure_channel(address, options=channel_options)
    if tls.server_name:
        channel_options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(address, tls.credentials(), options=channel_options)


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries ``token`` (none without one)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def read_token(token_file=None, environ=None) -> str | None:
    """The token in ``token_file`` (surrounding whitespace dropped), else ``$CLOUDSPLIT_TOKEN``,
    else None. An empty token is an error, never "no token"."""
    if token_file is not None:
        token = pathlib.Path(token_file).read_text().strip()
        if not token:
            raise ValueError(f"--token-file {token_file}: the file is empty")
        return token
    token = (os.environ if environ is None else environ).get(TOKEN_ENV)
    if token is not None and not token.strip():
        raise ValueError(f"${TOKEN_ENV} is set but empty")
    return token.strip() if token is not None else None


class InsecureListenError(ValueError):
    """A server asked to listen beyond loopback without TLS (and without ``insecure``)."""


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1 and ``localhost``. Any
    other name counts as reachable from outside (it may resolve anywhere)."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen_address(host: str, tls: ServerTLS | None, insecure: bool = False) -> None:
    """Refuses (``InsecureListenError``) to listen on a non-loopback ``host`` in plaintext unless
    ``insecure`` says so: tokens and tensors would cross the network readable by anyone on it."""
    if tls is None and not insecure and not is_loopback(host):
        raise InsecureListenError(
            f"refusing to listen on {host} without TLS: requests, tensors and the token would cross the network "
            f"in plaintext. Give --tls-cert and --tls-key (and --client-ca to require client certificates), "
            f"listen on 127.0.0.1, or pass --insecure to accept plaintext on this network")


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` with UNAUTHENTICATED, before any
    handler runs; the comparison takes the same time wherever the offered token first differs.
    Health checks stay open (a load balancer probes them without credentials)."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith("/grpc.health.v1.Health/"):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        offered = metadata.get("authorization", "")
        offered = offered.encode() if isinstance(offered, str) else bytes(offered)
        if hmac.compare_digest(offered, self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        message = "missing or wrong token: send metadata 'authorization: Bearer <token>'"

        def deny(request_or_iterator, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        return replace_behavior(handler, deny)


def replace_behavior(handler: grpc.RpcMethodHandler, behavior) -> grpc.RpcMethodHandler:
    """A method handler of the same kind and serializers as ``handler`` that runs ``behavior``."""
    factories = {(False, False): grpc.unary_unary_rpc_method_handler,
                 (False, True): grpc.unary_stream_rpc_method_handler,
                 (True, False): grpc.stream_unary_rpc_method_handler,
                 (True, True): grpc.stream_stream_rpc_method_handler}
    factory = factories[(handler.request_streaming, handler.response_streaming)]
    return factory(behavior, request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)


def original_behavior(handler: grpc.RpcMethodHandler):
    """The function a method handler runs, whichever of its four kinds it is."""
    return {(False, False): handler.unary_unary, (False, True): handler.unary_stream,
            (True, False): handler.stream_unary, (True, True): handler.stream_stream}[
        (handler.request_streaming, handler.response_streaming)]


# ---- command-line options ------------------------------------------------------------------------

class _RefuseTokenArgument(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"--token is not accepted: a token on the command line is visible to every user of the "
                     f"machine (ps, /proc). Put it in a file readable only by you and pass --token-file PATH, "
                     f"or set ${TOKEN_ENV}")


def add_token_arguments(parser: argparse.ArgumentParser, role: str) -> None:
    """``--token-file`` (and a ``--token`` that explains why it is refused). ``role``: what the
    token does, for the help text."""
    parser.add_argument("--token-file", metavar="PATH",
                        help=f"{role}: the bearer token, read from this file (default: ${TOKEN_ENV}, if set)")
    # Without this, argparse would take "--token X" as an abbreviation of --token-file.
    parser.add_argument("--token", nargs="?", action=_RefuseTokenArgument, help=argparse.SUPPRESS)


def add_client_tls_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS", "connect over TLS (mutual TLS with --tls-cert and --tls-key)")
    group.add_argument("--tls-ca", metavar="PEM", help="trust this certificate authority for the server's "
                       "certificate (turns TLS on; without it and the other --tls options the channel is plaintext)")
    group.add_argument("--tls-cert", metavar="PEM", help="this client's certificate, for servers that require one")
    group.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    group.add_argument("--tls-server-name", metavar="NAME", help="the name the server's certificate must carry, "
                       "when the address does not say it")


def client_tls_from_args(args) -> ClientTLS | None:
    """The ``ClientTLS`` the ``add_client_tls_arguments`` options describe, or None (plaintext)."""
    if not any((args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)):
        return None
    return ClientTLS.from_files(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
