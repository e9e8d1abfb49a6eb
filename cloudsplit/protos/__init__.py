"""The split-inference protocol (split.proto) and its generated gRPC stubs.

Regenerate the stubs with ``python -m cloudsplit.protos.regen`` (needs grpcio-tools).
"""
