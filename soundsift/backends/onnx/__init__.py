"""The ONNX Runtime backend, its exporter and the exported-folder format."""
