"""OpenAI wire models: pydantic only, no engine or framework imports."""

from modelhub.schemas.chat import *
from modelhub.schemas.chat import __all__ as _chat_all

__all__ = list(_chat_all)
