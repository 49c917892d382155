"""``modelhub contracts | keys | usage``: the operator's commands.

Each opens the database (migrating it if needed) with ``Settings()``, does one thing and
prints the result. ``keys create`` prints the new key once: only its hash is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import get_args

from modelhub.errors import ModelhubError
from modelhub.platform.contracts import Contract, ContractStore, Limits, Price
from modelhub.platform.service import open_store
from modelhub.platform.usage import GroupBy, render_usage, usage_report
from modelhub.settings import Settings

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    contracts = subparsers.add_parser("contracts", help="create, list, change contracts")
    verbs = contracts.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser("create", help="a new contract")
    create.add_argument("name")
    _contract_options(create)
    create.set_defaults(func=_run(_contracts_create))
    listing = verbs.add_parser("list", help="every contract")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.set_defaults(func=_run(_contracts_list))
    change = verbs.add_parser("update", help="change limits, models, prices or status")
    change.add_argument("name")
    _contract_options(change)
    change.add_argument("--status", choices=("active", "suspended"))
    change.add_argument("--all-models", action="store_true", help="remove the model allow-list")
    change.set_defaults(func=_run(_contracts_update))
    suspend = verbs.add_parser("suspend", help="refuse the contract's requests (403)")
    suspend.add_argument("name")
    suspend.set_defaults(func=_run(_contracts_suspend))

    keys = subparsers.add_parser("keys", help="create, list, revoke API keys")
    verbs = keys.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser("create", help="a new key (printed once)")
    create.add_argument("--contract", required=True)
    create.add_argument("--name", help="a label for the key")
    create.add_argument("--expires-in-days", type=float)
    create.set_defaults(func=_run(_keys_create))
    listing = verbs.add_parser("list", help="keys, by display prefix")
    listing.add_argument("--contract")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.set_defaults(func=_run(_keys_list))
    revoke = verbs.add_parser("revoke", help="revoke a key by id or display prefix")
    revoke.add_argument("key")
    revoke.set_defaults(func=_run(_keys_revoke))

    usage = subparsers.add_parser("usage", help="a contract's usage from the ledger")
    usage.add_argument("--contract", required=True)
    usage.add_argument("--since", type=_when, help="ISO date or time, UTC unless it says")
    usage.add_argument("--until", type=_when)
    usage.add_argument("--by", choices=get_args(GroupBy))
    usage.add_argument("--format", choices=("table", "csv", "json"), default="table")
    usage.set_defaults(func=_run(_usage))


def _contract_options(parser: argparse.ArgumentParser) -> None:
    for name, kind, text in (
        ("rps", float, "requests per second"),
        ("burst", int, "requests at once under --rps"),
        ("rpm", int, "requests per minute"),
        ("tpm", int, "tokens (prompt + completion) per minute"),
    ):
        parser.add_argument(
            f"--{name}",
            type=_optional(kind),
            default=argparse.SUPPRESS,
            help=f"{text}; 'none' removes it",
        )
    parser.add_argument(
        "--models",
        type=lambda s: [m for m in s.split(",") if m],
        help="allow-list, comma-separated",
    )
    parser.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="MODEL=IN/OUT",
        type=_price,
        help="price per 1M input / output tokens (repeatable)",
    )
    parser.add_argument(
        "--model-limits",
        metavar="MODEL=JSON",
        action="append",
        default=[],
        type=_model_limits,
        help='per-model limits, e.g. \'m={"rpm": 5, "tpm": 10000}\' (repeatable; {} removes)',
    )


def _run(
    body: Callable[[ContractStore, argparse.Namespace], Awaitable[None]],
) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        async def main() -> None:
            engine, store = await open_store(Settings())
            try:
                await body(store, args)
            finally:
                await engine.dispose()

        try:
            asyncio.run(main())
        except ModelhubError as error:
            print(f"error: {error.message}")
            return 1
        return 0

    return command


# Contracts -----------------------------------------------------------------------------
async def _contracts_create(store: ContractStore, args: argparse.Namespace) -> None:
    contract = await store.create_contract(
        args.name,
        limits=_limits(Limits(), args),
        model_limits=dict(args.model_limits),
        models=args.models,
        prices=dict(args.price),
    )
    _print_contracts([contract], "table")


async def _contracts_list(store: ContractStore, args: argparse.Namespace) -> None:
    _print_contracts(await store.list_contracts(), args.format)


async def _contracts_update(store: ContractStore, args: argparse.Namespace) -> None:
    current = await store.get_contract(args.name)
    model_limits = {**current.model_limits, **dict(args.model_limits)}
    changes = {
        "status": args.status,
        "limits": _limits(current.limits, args),
        "model_limits": {m: v for m, v in model_limits.items() if v != Limits()},
        "prices": {**current.prices, **dict(args.price)},
    }
    if args.all_models:
        changes["models"] = None
    elif args.models is not None:
        changes["models"] = args.models
    _print_contracts([await store.update_contract(args.name, **changes)], "table")


async def _contracts_suspend(store: ContractStore, args: argparse.Namespace) -> None:
    _print_contracts([await store.update_contract(args.name, status="suspended")], "table")


def _limits(current: Limits, args: argparse.Namespace) -> Limits:
    given = {n: getattr(args, n) for n in ("rps", "burst", "rpm", "tpm") if hasattr(args, n)}
    return replace(current, **given)


def _print_contracts(contracts: list[Contract], fmt: str) -> None:
    rows = [
        {
            "name": c.name,
            "status": c.status,
            "limits": c.limits.to_json(),
            "model_limits": {m: v.to_json() for m, v in c.model_limits.items()},
            "models": list(c.models) if c.models is not None else None,
            "prices": {m: {"input": p.input, "output": p.output} for m, p in c.prices.items()},
        }
        for c in contracts
    ]
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        limits = " ".join(f"{k}={v}" for k, v in row["limits"].items()) or "unlimited"
        models = ",".join(row["models"]) if row["models"] is not None else "all models"
        print(f"{row['name']}  {row['status']}  {limits}  {models}")
        for model, value in row["model_limits"].items():
            print(f"    limits for {model}: " + " ".join(f"{k}={v}" for k, v in value.items()))
        for model, price in row["prices"].items():
            print(
                f"    price for {model}: {price['input']} / {price['output']} per 1M tokens in / out"
            )


# Keys ----------------------------------------------------------------------------------
async def _keys_create(store: ContractStore, args: argparse.Namespace) -> None:
    expires = None
    if args.expires_in_days is not None:
        expires = datetime.now(UTC) + timedelta(days=args.expires_in_days)
    secret, key = await store.create_key(args.contract, name=args.name, expires_at=expires)
    print(
        f"Key {key.id} ({key.prefix}...) for contract {key.contract_name!r}; shown once, store it now:"
    )
    print(secret)


async def _keys_list(store: ContractStore, args: argparse.Namespace) -> None:
    rows = [
        {
            "id": k.id,
            "prefix": k.prefix,
            "contract": k.contract_name,
            "name": k.name,
            "created_at": _iso(k.created_at),
            "last_used_at": _iso(k.last_used_at),
            "revoked_at": _iso(k.revoked_at),
            "expires_at": _iso(k.expires_at),
        }
        for k in await store.list_keys(args.contract)
    ]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items() if v is not None))


async def _keys_revoke(store: ContractStore, args: argparse.Namespace) -> None:
    key = await store.revoke_key(int(args.key) if args.key.isdigit() else args.key)
    print(
        f"Key {key.id} ({key.prefix}...) of contract {key.contract_name!r} revoked at {_iso(key.revoked_at)}"
    )


# Usage ---------------------------------------------------------------------------------
async def _usage(store: ContractStore, args: argparse.Namespace) -> None:
    contract = await store.get_contract(args.contract)
    report = await usage_report(store.engine, contract.id, args.since, args.until, args.by)
    print(render_usage(report, args.format, args.by), end="")


# Argument types ------------------------------------------------------------------------
def _optional(kind: type) -> Callable[[str], object]:
    """A limit's value; ``none`` (None) removes it. An option not given keeps the current one."""

    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    return parse


def _price(text: str) -> tuple[str, Price]:
    model, _, prices = text.rpartition("=")
    given, _, taken = prices.partition("/")
    try:
        return model, Price(input=float(given), output=float(taken))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MODEL=IN/OUT, got {text!r}") from None


def _model_limits(text: str) -> tuple[str, Limits]:
    model, _, body = text.partition("=")
    try:
        return model, Limits.from_json(json.loads(body))
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"expected MODEL={{json limits}}, got {text!r}") from None


def _when(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")
