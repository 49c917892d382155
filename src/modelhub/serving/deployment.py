"""Which engine and which chat format serve each catalog model, built once at start-up."""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from modelhub.catalog import Catalog, ModelCard
from modelhub.catalog.serving_facts import ServingFacts, gguf_facts, upstream_facts
from modelhub.engines.base import Engine, EngineStats
from modelhub.engines.llamacpp import LlamaCppEngine
from modelhub.engines.upstream import UpstreamEngine
from modelhub.errors import ModelUnavailableError
from modelhub.formats.base import ChatFormat
from modelhub.formats.plain import PlainFormat
from modelhub.formats.template import TemplateFormat
from modelhub.metrics import Metrics
from modelhub.settings import Settings

__all__ = ["Deployment", "ServedModel"]

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    card: ModelCard
    format: ChatFormat | None
    engine: Engine | None
    where: str  # for logs and errors: a GGUF path, upstream URLs, or "not configured"
    facts: ServingFacts = field(default_factory=ServingFacts)  # what the backend says

    @property
    def max_context(self) -> int:
        """The one max_model_len: the least of the card's window, the backend's own (GGUF
        trained context, upstream max_model_len) and the embedded engine's KV size."""
        windows = (
            self.card.technology.context_window,
            self.facts.context_window,
            getattr(self.engine, "max_context", None),
        )
        return min(w for w in windows if w)

    def require_engine(self) -> Engine:
        if self.engine is None:
            raise ModelUnavailableError(
                f"The model '{self.card.id}' is in the catalog but no backend serves it on this "
                "hub. An operator configures one with MODELHUB_BACKENDS, e.g. "
                f'MODELHUB_BACKENDS=\'{{"{self.card.id}": {{"gguf": "/path/model.gguf"}}}}\' or '
                f'\'{{"{self.card.id}": {{"upstreams": ["http://vllm:8000/v1"]}}}}\'.',
                param="model",
                headers={"Retry-After": "3600"},
            )
        return self.engine

    def require_format(self) -> ChatFormat:
        if self.format is None:
            self.require_engine()
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
            served = await self._serve(card)
            served.facts = await _facts(card, served.where, self._settings)
            self._served[card.id] = served
            if served.engine is None:
                log.info("model %s: listed, not served (no backend configured)", card.id)
            else:
                log.info(
                    "model %s: served by %s from %s, max_model_len %d, loaded in %.1f s",
                    card.id,
                    served.engine.name,
                    served.where,
                    served.max_context,
                    time.perf_counter() - started,
                )
        self._metrics.watch_engines(self.engine_stats)

    async def close(self) -> None:
        for served in self._served.values():
            if served.engine is not None:
                await served.engine.close()

    async def _serve(self, card: ModelCard) -> ServedModel:
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
                observer=self._metrics.step_observer(card.id),
                queue_observer=self._metrics.queue_observer(card.id),
            )
            await engine.start()
            return ServedModel(card, self._format(card, engine), engine, str(path))
        if backend.kind == "upstream":
            engine = UpstreamEngine(
                list(backend.upstreams),
                backend.served_model_name or card.id,
                connect_timeout_s=self._settings.upstream_connect_timeout_s,
                read_timeout_s=self._settings.upstream_read_timeout_s,
                health_interval_s=self._settings.upstream_health_interval_s,
                api_key=self._settings.upstream_api_key,
                on_prompt_mismatch=self._metrics.prompt_mismatch_observer(card.id),
            )
            await engine.start()
            return ServedModel(card, self._format(card, None), engine, ", ".join(backend.upstreams))
        return ServedModel(card, self._format(card, None), None, "not configured")

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
        return all(s.engine.ready for s in self._served.values() if s.engine is not None)

    def engine_stats(self) -> dict[str, EngineStats]:
        return {m: s.engine.stats() for m, s in self._served.items() if s.engine is not None}
