"""Model repository, onnxruntime sessions, dynamic batcher and metrics. Knows no task."""
