"""apps.split: where each layer runs. A bandwidth slider and an RTT field feed the partitioner; the
layers are drawn as a strip coloured device/server with the bytes crossing each cut, estimated vs
measured latency per request, and a "fallback" badge when the service is down.

    python3 -m apps.split [--server HOST:PORT] [--selftest]

Without --server it starts a ``cloudsplit`` service on 127.0.0.1 in this process.
"""
