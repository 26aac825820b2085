"""zhserve: Chinese NLP models behind a fast, observable HTTP API."""

__version__ = "0.1.0"
