"""Which backend serves each catalog model (a format + engine here, or an upstream pool),
built once at start-up."""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from modelhub.catalog import Catalog, ModelCard
from modelhub.catalog.serving_facts import ServingFacts, gguf_facts, upstream_facts
from modelhub.engines.base import EngineStats
from modelhub.engines.llamacpp import LlamaCppEngine
from modelhub.errors import ModelUnavailableError
from modelhub.formats.base import ChatFormat
from modelhub.formats.plain import PlainFormat
from modelhub.formats.template import TemplateFormat
from modelhub.metrics import Metrics
from modelhub.serving.backends.base import Backend
from modelhub.serving.backends.local import LocalBackend
from modelhub.serving.backends.upstream import UpstreamBackend
from modelhub.settings import Settings

__all__ = ["Deployment", "ServedModel"]

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    card: ModelCard
    backend: Backend | None
    # The model's format where the hub has one, even when no backend serves the model:
    # its prompts can still be counted (``modelhub tokenize``, ``/tokenize``).
    format: ChatFormat | None = None
    facts: ServingFacts = field(default_factory=ServingFacts)  # what the backend says

    @property
    def where(self) -> str:
        return self.backend.where if self.backend else "not configured"

    @property
    def max_context(self) -> int:
        """The one max_model_len: the least of the card's window, the backend's own (GGUF
        trained context, upstream max_model_len) and the embedded engine's KV size."""
        windows = (
            self.card.technology.context_window,
            self.facts.context_window,
            self.backend.max_context if self.backend else None,
        )
        return min(w for w in windows if w)

    def require_backend(self) -> Backend:
        if self.backend is None:
            raise ModelUnavailableError(
                f"The model '{self.card.id}' is in the catalog but no backend serves it on this "
                "hub. An operator configures one with MODELHUB_BACKENDS, e.g. "
                f'MODELHUB_BACKENDS=\'{{"{self.card.id}": {{"gguf": "/path/model.gguf"}}}}\' or '
                f'\'{{"{self.card.id}": {{"upstreams": ["http://vllm:8000/v1"]}}}}\'.',
                param="model",
                headers={"Retry-After": "3600"},
            )
        return self.backend

    def require_format(self) -> ChatFormat:
        if self.format is None:
            self.require_backend()
            raise ModelUnavailableError(
                f"The model '{self.card.id}' has no prompt format on this hub.", param="model"
            )
        return self.format


def _resolve_gguf(spec: str, cache_dir: Path) -> Path:
    """``package:<module>`` names a package that ships a GGUF and assembles it on demand."""
    if not spec.startswith("package:"):
        return Path(spec).expanduser()
    module = importlib.import_module(spec.removeprefix("package:"))
    target = cache_dir / "gguf" / module.MODEL_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(module.assemble(target))


async def _facts(card: ModelCard, where: str, settings: Settings) -> ServingFacts:
    """What the backend serving ``card`` says of itself (``where``: the resolved GGUF)."""
    backend = card.backend
    if backend.kind == "llamacpp":
        return gguf_facts(Path(where))
    if backend.kind == "upstream":
        name = backend.served_model_name or card.id
        return await upstream_facts(list(backend.upstreams), name, settings.upstream_api_key)
    return ServingFacts()


class Deployment:
    def __init__(self, catalog: Catalog, settings: Settings, metrics: Metrics):
        self.catalog = catalog
        self._settings = settings
        self._metrics = metrics
        self._served: dict[str, ServedModel] = {}

    async def start(self) -> None:
        for card in self.catalog:
            started = time.perf_counter()
            backend = await self._backend(card)
            served = ServedModel(card, backend, getattr(backend, "format", None))
            if backend is None:
                served.format = self._format(card, None)
            served.facts = await _facts(card, served.where, self._settings)
            self._served[card.id] = served
            if served.backend is None:
                log.info("model %s: listed, not served (no backend configured)", card.id)
            else:
                log.info(
                    "model %s: served by %s from %s, max_model_len %d, loaded in %.1f s",
                    card.id,
                    served.backend.name,
                    served.where,
                    served.max_context,
                    time.perf_counter() - started,
                )
        self._metrics.watch_engines(self.engine_stats)

    async def close(self) -> None:
        for served in self._served.values():
            if served.backend is not None:
                await served.backend.close()

    async def _backend(self, card: ModelCard) -> Backend | None:
        backend = card.backend
        if backend.kind == "llamacpp":
            assert backend.gguf is not None
            path = _resolve_gguf(backend.gguf, self._settings.cache_dir)
            engine = LlamaCppEngine(
                path,
                slots=self._settings.engine_slots,
                context=self._settings.engine_context,
                batch=self._settings.engine_batch,
                queue_limit=self._settings.engine_queue,
                threads=self._settings.engine_threads,
                top_k=self._settings.engine_top_k,
                mmproj=backend.mmproj,
                max_running=self._settings.engine_max_running_per_contract,
                cache_entries=(
                    self._settings.engine_prefix_cache_entries
                    if self._settings.engine_prefix_cache
                    else 0
                ),
                cache_bytes=self._settings.engine_prefix_cache_mib << 20,
                exact_reuse=self._settings.engine_prefix_cache_exact,
                observer=self._metrics.step_observer(card.id),
                queue_observer=self._metrics.queue_observer(card.id),
            )
            await engine.start()
            return LocalBackend(self._format(card, engine), engine, str(path))
        if backend.kind == "upstream":
            upstream = UpstreamBackend(
                list(backend.upstreams),
                backend.served_model_name or card.id,
                chat_format=self._format(card, None),
                connect_timeout_s=self._settings.upstream_connect_timeout_s,
                read_timeout_s=self._settings.upstream_read_timeout_s,
                health_interval_s=self._settings.upstream_health_interval_s,
                api_key=self._settings.upstream_api_key,
                on_prompt_mismatch=self._metrics.prompt_mismatch_observer(card.id),
            )
            await upstream.start()
            return upstream
        return None

    def _format(self, card: ModelCard, engine: LlamaCppEngine | None) -> ChatFormat | None:
        if card.format == "mistral":
            from modelhub.formats.mistral import MistralFormat

            return MistralFormat(card.backend.tokenizer, self._settings.cache_dir)
        if engine is None:
            return None
        assert engine.tokenizer is not None
        if card.format == "plain":
            return PlainFormat(engine.tokenizer)
        template = card.backend.chat_template or engine.chat_template
        if template is None:
            raise ValueError(
                f"{card.id}: the GGUF {engine.model_path} carries no chat template; name a "
                "llama.cpp built-in one with the backend's chat_template"
            )
        return TemplateFormat(template, engine.tokenizer)

    def get(self, model_id: str) -> ServedModel:
        self.catalog.get(model_id)  # 404 naming the available models
        return self._served[model_id]

    def __iter__(self):
        return iter(self._served.values())

    @property
    def ready(self) -> bool:
        return all(s.backend.ready for s in self._served.values() if s.backend is not None)

    def engine_stats(self) -> dict[str, EngineStats]:
        return {m: s.backend.stats() for m, s in self._served.items() if s.backend is not None}
