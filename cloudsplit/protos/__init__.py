"""The split-inference protocol (split.proto) and its generated gRPC stubs.

Regenerate the stubs with ``python -m cloudsplit.protos.regen`` (needs grpcio-tools).
"""

# Limits both ends of the split-inference protocol keep: a message carries at most
# ``max_message_mb`` (gRPC's own default unless configured), and a stream's data moves in chunks of at
# most ``CHUNK_BYTES`` that leave ``CHUNK_OVERHEAD_BYTES`` for the fields around them.
MiB = 1 << 20
DEFAULT_MAX_MESSAGE_MB = 4.0
CHUNK_BYTES = MiB
CHUNK_OVERHEAD_BYTES = 4096
MIN_CHUNK_BYTES = 1024
# Bandwidth probes (MeasureUplink / MeasureDownlink) move data in chunks of this size; the first is an
# untimed lead-in.
PROBE_CHUNK_BYTES = 16 * 1024
SPLIT_INFERENCE_SERVICE = "cloudsplit.v1.SplitInference"


def chunk_bytes(max_message_mb: float, largest: int = CHUNK_BYTES) -> int:
    """The chunk size (at most ``largest``) whose message fits under ``max_message_mb``."""
    return max(MIN_CHUNK_BYTES, min(largest, int(max_message_mb * MiB) - CHUNK_OVERHEAD_BYTES))
