"""Host tooling: ONNX/TFLite/builder graphs -> IR -> passes -> .edge files."""
