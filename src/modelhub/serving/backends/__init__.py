"""Backends: what serves a model, behind one seam (``base.Backend``)."""

from modelhub.serving.backends.base import (
    Backend,
    ChoiceEnd,
    ChoiceEvent,
    Logprob,
    Progress,
    RequestJob,
)
from modelhub.serving.backends.local import LocalBackend
from modelhub.serving.backends.upstream import UpstreamBackend

__all__ = [
    "Backend",
    "ChoiceEnd",
    "ChoiceEvent",
    "LocalBackend",
    "Logprob",
    "Progress",
    "RequestJob",
    "UpstreamBackend",
]
