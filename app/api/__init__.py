"""HTTP layer: pydantic schemas, routers, error mapping. No numpy, no onnxruntime."""
