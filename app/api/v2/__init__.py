"""The Open Inference Protocol (KServe v2 / Triton HTTP): routes and the tensor codec."""

from app.api.v2 import routes

__all__ = ["routes"]
