"""The deployment formats a run's scales export to, named without importing onnx: the CLI lists them
and the package root loads the exporter only when one is asked for."""

FORMATS = ("onnx-qdq", "aimet")
