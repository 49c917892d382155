"""What an operator can do to contracts, keys, usage and admin tokens: the one service
layer under both ``modelhub contracts|keys|usage|admin-tokens`` and ``/admin/v1``.

Names and model ids are checked here, so the CLI and the HTTP API refuse the same things
with the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from modelhub.catalog import load_cards
from modelhub.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError
from modelhub.platform import keys
from modelhub.platform.admin_tokens import AdminToken, AdminTokenStore
from modelhub.platform.auth import bearer_token
from modelhub.platform.contracts import ApiKey, Contract, ContractStore, Limits, Price, Status
from modelhub.platform.service import open_store
from modelhub.platform.usage import EVERY_CONTRACT, GroupBy, usage_report
from modelhub.settings import Settings

__all__ = ["CONTRACT_NAME", "Management", "open_management"]

CONTRACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


async def _nothing() -> None:
    return None


class Management:
    """``model_ids`` are the catalog's (allow-lists, prices and model limits must name one);
    ``before_read`` runs before a usage report (a server flushes its ledger)."""

    def __init__(
        self,
        store: ContractStore,
        tokens: AdminTokenStore,
        model_ids: Collection[str],
        *,
        auth: bool = True,
        before_read: Callable[[], Awaitable[None]] = _nothing,
    ):
        self.store = store
        self.tokens = tokens
        self._model_ids = frozenset(model_ids)
        self._auth = auth
        self._before_read = before_read

    # Who may manage ----------------------------------------------------------------------
    async def authorize(self, authorization: str | None) -> AdminToken | None:
        """The admin token in ``authorization``; a tenant key is 403, anything else 401.
        With auth off the admin API is open (None)."""
        if not self._auth:
            return None
        secret = bearer_token(authorization)
        if secret.startswith(keys.ADMIN_TOKEN_PREFIX):
            token = await self.tokens.verify(secret)
            if token is not None:
                return token
        elif await self.store.find_key(secret) is not None:
            raise PermissionDeniedError(
                "API keys cannot use the admin API; use an admin token "
                "(modelhub admin-tokens create NAME).",
                code="admin_token_required",
            )
        raise AuthenticationError("Incorrect admin token provided.", code="invalid_admin_token")

    # Contracts ---------------------------------------------------------------------------
    async def create_contract(
        self,
        name: str,
        *,
        limits: Limits | None = None,
        model_limits: Mapping[str, Limits] | None = None,
        models: list[str] | None = None,
        prices: Mapping[str, Price] | None = None,
    ) -> Contract:
        _check_name(name)
        self._check_models("models", models or ())
        self._check_models("model_limits", model_limits or {})
        self._check_models("prices", prices or {})
        return await self.store.create_contract(
            name, limits=limits, model_limits=model_limits, models=models, prices=prices
        )

    async def list_contracts(self) -> list[Contract]:
        return await self.store.list_contracts()

    async def get_contract(self, name: str) -> Contract:
        return await self.store.get_contract(name)

    async def update_contract(
        self,
        name: str,
        *,
        status: Status | None = None,
        limits: Mapping[str, float | int | None] | None = None,
        model_limits: Mapping[str, Limits | None] | None = None,
        models: list[str] | None = None,
        all_models: bool = False,
        prices: Mapping[str, Price | None] | None = None,
    ) -> Contract:
        """Change only what is given: ``limits`` are the limit fields to set (None removes
        one); a model's limits or price set to None is removed; ``all_models`` opens every
        model, ``models`` sets the allow-list."""
        current = await self.store.get_contract(name)
        changes: dict = {"status": status}
        if limits:
            changes["limits"] = replace(current.limits, **limits)
        if model_limits:
            self._check_models("model_limits", model_limits)
            merged = {**current.model_limits, **model_limits}
            changes["model_limits"] = {m: v for m, v in merged.items() if v and v != Limits()}
        if prices:
            self._check_models("prices", prices)
            merged = {**current.prices, **prices}
            changes["prices"] = {m: p for m, p in merged.items() if p is not None}
        if all_models:
            changes["models"] = None
        elif models is not None:
            self._check_models("models", models)
            changes["models"] = models
        return await self.store.update_contract(name, **changes)

    async def set_status(self, name: str, status: Status) -> Contract:
        return await self.store.update_contract(name, status=status)

    # Keys --------------------------------------------------------------------------------
    async def create_key(
        self, contract: str, *, name: str | None = None, expires_at: datetime | None = None
    ) -> tuple[str, ApiKey]:
        return await self.store.create_key(contract, name=name, expires_at=expires_at)

    async def list_keys(self, contract: str | None = None) -> list[ApiKey]:
        return await self.store.list_keys(contract)

    async def revoke_key(self, ref: str) -> ApiKey:
        return await self.store.revoke_key(ref)

    async def rotate_key(self, ref: str) -> tuple[str, ApiKey]:
        return await self.store.rotate_key(ref)

    # Usage -------------------------------------------------------------------------------
    async def usage(
        self,
        contract: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        by: GroupBy | None = None,
    ) -> list[dict]:
        """One contract's usage, or every request's (anonymous ones included) without one."""
        if since is not None and until is not None and since >= until:
            raise InvalidRequestError("since must be before until", param="since")
        contract_id = (
            EVERY_CONTRACT if contract is None else (await self.store.get_contract(contract)).id
        )
        await self._before_read()
        return await usage_report(self.store.engine, contract_id, since, until, by)

    # Admin tokens ------------------------------------------------------------------------
    async def create_admin_token(self, name: str) -> tuple[str, AdminToken]:
        _check_name(name, what="an admin token's name")
        return await self.tokens.create(name)

    async def list_admin_tokens(self) -> list[AdminToken]:
        return await self.tokens.list()

    async def revoke_admin_token(self, ref: str) -> AdminToken:
        return await self.tokens.revoke(ref)

    def _check_models(self, param: str, models: Collection[str]) -> None:
        unknown = sorted(set(models) - self._model_ids)
        if unknown:
            raise InvalidRequestError(
                f"{param}: not in the catalog: {', '.join(unknown)}. "
                f"Catalog models: {', '.join(sorted(self._model_ids))}.",
                param=param,
                code="model_not_found",
            )


def _check_name(name: str, what: str = "a contract's name") -> None:
    if not CONTRACT_NAME.fullmatch(name):
        raise InvalidRequestError(
            f"{what} must be 1 to 100 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit; got {name!r}",
            param="name",
            code="invalid_name",
        )


async def open_management(settings: Settings) -> tuple[AsyncEngine, Management]:
    """The CLI's management: the migrated database, checked against the catalog on disk.
    The caller disposes of the engine."""
    engine, store = await open_store(settings)
    model_ids = [card.id for card in load_cards(settings.catalog_dir)]
    return engine, Management(store, AdminTokenStore(store.engine), model_ids, auth=settings.auth)
