"""``/admin/v1``: the operator's API, a thin router over ``platform.management``.

Every route needs an admin token (``modelhub admin-tokens create NAME``); a tenant's API
key gets 403. With auth off the API is open, as the rest of the hub is.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

from fastapi import APIRouter, Depends, Request, Response

from modelhub import access
from modelhub.api.deps import hub
from modelhub.platform import ApiKey, Contract, Limits, Price, render_usage
from modelhub.platform.admin_tokens import AdminToken
from modelhub.platform.timespec import parse_moment
from modelhub.platform.usage import GroupBy
from modelhub.schemas.admin import (
    AdminLimits,
    AdminPrice,
    AdminTokenCreate,
    AdminTokenCreated,
    AdminTokenList,
    AdminTokenOut,
    BackendList,
    ContractCreate,
    ContractList,
    ContractOut,
    ContractPatch,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    StatusOut,
    UsageList,
)
from modelhub.serving.status import backends, live_status

__all__ = ["router"]


async def require_admin(request: Request) -> None:
    token = await hub(request).management.authorize(request.headers.get("authorization"))
    if token is not None:
        access.note_contract(f"admin:{token.name}")


router = APIRouter(prefix="/admin/v1", tags=["admin"], dependencies=[Depends(require_admin)])


# Wire <-> domain ---------------------------------------------------------------------------
def _limits_out(limits: Limits) -> AdminLimits:
    return AdminLimits(**asdict(limits))


def _limits_in(limits: AdminLimits | None) -> Limits | None:
    return None if limits is None else Limits(**limits.model_dump())


def _price_in(price: AdminPrice) -> Price:
    return Price(input=price.input_per_million, output=price.output_per_million)


def _contract_out(c: Contract) -> ContractOut:
    return ContractOut(
        id=c.id,
        name=c.name,
        status=c.status,
        limits=_limits_out(c.limits),
        model_limits={m: _limits_out(v) for m, v in c.model_limits.items()},
        models=None if c.models is None else list(c.models),
        prices={
            m: AdminPrice(input_per_million=p.input, output_per_million=p.output)
            for m, p in c.prices.items()
        },
        created_at=c.created_at,
        updated_at=c.updated_at,
    )


def _key_out(key: ApiKey) -> dict:
    return KeyOut(
        id=key.id,
        contract=key.contract_name,
        name=key.name,
        prefix=key.prefix,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
        expires_at=key.expires_at,
    ).model_dump()


def _token_out(token: AdminToken) -> dict:
    return AdminTokenOut(**asdict(token)).model_dump()


# Contracts -------------------------------------------------------------------------------
@router.get("/contracts", response_model=ContractList)
async def list_contracts(request: Request) -> ContractList:
    contracts = await hub(request).management.list_contracts()
    return ContractList(data=[_contract_out(c) for c in contracts])


@router.post("/contracts", status_code=201, response_model=ContractOut)
async def create_contract(body: ContractCreate, request: Request) -> ContractOut:
    contract = await hub(request).management.create_contract(
        body.name,
        limits=_limits_in(body.limits),
        model_limits={m: _limits_in(v) for m, v in (body.model_limits or {}).items()},
        models=body.models,
        prices={m: _price_in(p) for m, p in (body.prices or {}).items()},
    )
    return _contract_out(contract)


@router.get("/contracts/{name}", response_model=ContractOut)
async def get_contract(name: str, request: Request) -> ContractOut:
    return _contract_out(await hub(request).management.get_contract(name))


@router.patch("/contracts/{name}", response_model=ContractOut)
async def update_contract(name: str, body: ContractPatch, request: Request) -> ContractOut:
    given = body.model_fields_set
    contract = await hub(request).management.update_contract(
        name,
        status=body.status,
        limits=body.limits.model_dump(include=body.limits.model_fields_set)
        if body.limits
        else None,
        model_limits={m: _limits_in(v) for m, v in (body.model_limits or {}).items()},
        models=body.models,
        all_models="models" in given and body.models is None,
        prices={m: p and _price_in(p) for m, p in (body.prices or {}).items()},
    )
    return _contract_out(contract)


@router.post("/contracts/{name}/suspend", response_model=ContractOut)
async def suspend_contract(name: str, request: Request) -> ContractOut:
    return _contract_out(await hub(request).management.set_status(name, "suspended"))


@router.post("/contracts/{name}/resume", response_model=ContractOut)
async def resume_contract(name: str, request: Request) -> ContractOut:
    return _contract_out(await hub(request).management.set_status(name, "active"))


# Keys ------------------------------------------------------------------------------------
@router.get("/contracts/{name}/keys", response_model=KeyList)
async def list_contract_keys(name: str, request: Request) -> dict:
    return {"data": [_key_out(k) for k in await hub(request).management.list_keys(name)]}


@router.post("/contracts/{name}/keys", status_code=201, response_model=KeyCreated)
async def create_key(name: str, body: KeyCreate, request: Request) -> dict:
    secret, key = await hub(request).management.create_key(
        name, name=body.name, expires_at=body.expires_at
    )
    return {**_key_out(key), "key": secret}


@router.get("/keys", response_model=KeyList)
async def list_keys(request: Request) -> dict:
    return {"data": [_key_out(k) for k in await hub(request).management.list_keys()]}


@router.delete("/keys/{ref}", response_model=KeyOut)
async def revoke_key(ref: str, request: Request) -> dict:
    """Revoke a key named by its id, its display prefix or the key itself."""
    return _key_out(await hub(request).management.revoke_key(ref))


@router.post("/keys/{ref}/rotate", status_code=201, response_model=KeyCreated)
async def rotate_key(ref: str, request: Request) -> dict:
    """A new key for the same contract and name; the old one is revoked."""
    secret, key = await hub(request).management.rotate_key(ref)
    return {**_key_out(key), "key": secret}


# Usage -----------------------------------------------------------------------------------
@router.get("/usage", response_model=UsageList, responses={200: {"content": {"text/csv": {}}}})
async def usage(
    request: Request,
    contract: str | None = None,
    since: str | None = None,
    until: str | None = None,
    by: GroupBy | None = None,
    format: Literal["json", "csv"] = "json",
) -> Response:
    """Usage across contracts (or of one). ``since`` / ``until`` take dates, times,
    ``today``, ``yesterday`` or ages such as ``7d``; ``since`` inclusive, ``until`` not."""
    rows = await hub(request).management.usage(
        contract,
        parse_moment(since, param="since") if since else None,
        parse_moment(until, param="until") if until else None,
        by,
    )
    if format == "csv":
        return Response(render_usage(rows, "csv", by), media_type="text/csv")
    return Response(UsageList(data=rows).model_dump_json(), media_type="application/json")


# Backends and status ---------------------------------------------------------------------
@router.get("/backends", response_model=BackendList)
async def list_backends(request: Request) -> BackendList:
    return BackendList(data=backends(hub(request).deployment))


@router.get("/status", response_model=StatusOut)
async def status(request: Request) -> StatusOut:
    h = hub(request)
    return StatusOut(data=live_status(h.deployment, h.metrics))


# Admin tokens ----------------------------------------------------------------------------
@router.get("/admin-tokens", response_model=AdminTokenList)
async def list_admin_tokens(request: Request) -> dict:
    tokens = await hub(request).management.list_admin_tokens()
    return {"data": [_token_out(t) for t in tokens]}


@router.post("/admin-tokens", status_code=201, response_model=AdminTokenCreated)
async def create_admin_token(body: AdminTokenCreate, request: Request) -> dict:
    secret, token = await hub(request).management.create_admin_token(body.name)
    return {**_token_out(token), "token": secret}


@router.delete("/admin-tokens/{ref}", response_model=AdminTokenOut)
async def revoke_admin_token(ref: str, request: Request) -> dict:
    return _token_out(await hub(request).management.revoke_admin_token(ref))
