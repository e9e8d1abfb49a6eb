"""apps.classify: a live classifier over the camera, or a folder of images when no camera opens.

    python3 -m apps.classify [--folder DIR] [--no-camera] [--selftest]

Top-k labels, a latency overlay (p50/p95 over the last 30 frames), an fp32/int8 switch (int8
calibrated on the folder's images through converter.quantize), 1 or 2 threads, and the ISA the
runtime picked. The model is a small CNN trained here, by edge.Trainer, on generated shape images.
"""
