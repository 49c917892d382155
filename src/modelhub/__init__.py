"""modelhub: a self-hostable AI model hub with an OpenAI-compatible API."""

__version__ = "0.1.0"
