"""``modelhub contracts | keys | usage | admin-tokens``: the operator's commands.

Each opens the database (migrating it if needed), says on stderr which one, does one
thing through ``Management`` (the service the admin API uses too) and prints the result
on stdout. Errors go to stderr with exit status 1. ``keys create`` / ``keys rotate`` /
``admin-tokens create`` print the secret once: only its hash is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from modelhub.errors import ModelhubError
from modelhub.platform.contracts import ApiKey, Contract, Limits, Price
from modelhub.platform.management import Management, open_management
from modelhub.platform.timespec import parse_moment
from modelhub.platform.usage import render_usage
from modelhub.settings import Settings

__all__ = ["add_commands", "storage_options"]

_LIMITS = (
    ("rps", float, "requests per second"),
    ("burst", int, "requests at once under --rps"),
    ("rpm", int, "requests per minute"),
    ("tpm", int, "tokens (prompt + completion) per minute"),
    ("max_running", int, "sequences an engine runs at once for the contract"),
)


def storage_options() -> argparse.ArgumentParser:
    """``--data-dir`` / ``--database-url``, accepted before or after the command."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--data-dir", default=argparse.SUPPRESS, help="where the SQLite database lives"
    )
    parent.add_argument(
        "--database-url", default=argparse.SUPPRESS, help="a database URL (overrides --data-dir)"
    )
    return parent


def add_commands(
    subparsers: argparse._SubParsersAction, settings: Callable[[argparse.Namespace], Settings]
) -> None:
    """``settings(args)`` builds the validated settings from the environment and flags."""
    common = [storage_options()]

    def command(verbs, name: str, body, help: str) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help, parents=common)
        parser.set_defaults(func=_run(body, settings))
        return parser

    contracts = subparsers.add_parser("contracts", help="create, list, change contracts")
    verbs = contracts.add_subparsers(dest="verb", required=True)
    create = command(verbs, "create", _contracts_create, "a new contract")
    create.add_argument("name")
    _contract_options(create)
    listing = command(verbs, "list", _contracts_list, "every contract")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    show = command(verbs, "show", _contracts_show, "one contract and its keys")
    show.add_argument("name")
    show.add_argument("--format", choices=("table", "json"), default="table")
    change = command(verbs, "update", _contracts_update, "change limits, models, prices, status")
    change.add_argument("name")
    _contract_options(change)
    change.add_argument("--status", choices=("active", "suspended"))
    change.add_argument("--all-models", action="store_true", help="remove the model allow-list")
    command(
        verbs, "suspend", _contracts_suspend, "refuse the contract's requests (403)"
    ).add_argument("name")
    command(
        verbs, "resume", _contracts_resume, "accept the contract's requests again"
    ).add_argument("name")

    keys = subparsers.add_parser("keys", help="create, list, revoke, rotate API keys")
    verbs = keys.add_subparsers(dest="verb", required=True)
    create = command(verbs, "create", _keys_create, "a new key (printed once)")
    create.add_argument("--contract", required=True)
    create.add_argument("--name", help="a label for the key")
    create.add_argument("--expires-in-days", type=float)
    listing = command(verbs, "list", _keys_list, "keys, by display prefix")
    listing.add_argument("--contract")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    revoke = command(verbs, "revoke", _keys_revoke, "revoke a key by id, prefix or the key itself")
    revoke.add_argument("key")
    rotate = command(verbs, "rotate", _keys_rotate, "replace a key: a new one, the old revoked")
    rotate.add_argument("key")

    usage = command(subparsers, "usage", _usage, "usage from the ledger, of one or all contracts")
    usage.add_argument("--contract", help="one contract (default: every request)")
    when = "a date, a time, today, yesterday, or an age such as 7d or 12h (UTC)"
    usage.add_argument("--since", help=f"from (inclusive): {when}")
    usage.add_argument("--until", help=f"to (exclusive): {when}")
    usage.add_argument("--by", choices=("model", "key", "status", "day", "hour"))
    usage.add_argument("--format", choices=("table", "csv", "json"), default="table")

    tokens = subparsers.add_parser("admin-tokens", help="tokens of the admin API (/admin/v1)")
    verbs = tokens.add_subparsers(dest="verb", required=True)
    command(verbs, "create", _tokens_create, "a new admin token (printed once)").add_argument(
        "name"
    )
    command(verbs, "list", _tokens_list, "admin tokens, by display prefix")
    command(verbs, "revoke", _tokens_revoke, "revoke by id, prefix or the token").add_argument(
        "token"
    )


def _contract_options(parser: argparse.ArgumentParser) -> None:
    for name, kind, text in _LIMITS:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=_optional(kind),
            default=argparse.SUPPRESS,
            help=f"{text}; 'none' removes it",
        )
    parser.add_argument(
        "--models",
        type=lambda s: [m for m in s.split(",") if m],
        help="allow-list of catalog model ids, comma-separated",
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
    body: Callable[[Management, argparse.Namespace], Awaitable[None]],
    settings: Callable[[argparse.Namespace], Settings],
) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        config = settings(args)
        url = make_url(config.resolved_database_url).render_as_string(hide_password=True)
        print(f"database: {url}", file=sys.stderr)

        async def main() -> None:
            engine, management = await open_management(config)
            try:
                await body(management, args)
            finally:
                await engine.dispose()

        try:
            asyncio.run(main())
        except ModelhubError as error:
            print(f"modelhub: error: {error.message}", file=sys.stderr)
            return 1
        except (SQLAlchemyError, OSError) as error:
            print(f"modelhub: error: the database is not usable: {error}", file=sys.stderr)
            return 1
        return 0

    return command


# Contracts -----------------------------------------------------------------------------
async def _contracts_create(admin: Management, args: argparse.Namespace) -> None:
    contract = await admin.create_contract(
        args.name,
        limits=Limits(**_given_limits(args)),
        model_limits=dict(args.model_limits),
        models=args.models,
        prices=dict(args.price),
    )
    _print_contracts([contract], "table")


async def _contracts_list(admin: Management, args: argparse.Namespace) -> None:
    _print_contracts(await admin.list_contracts(), args.format)


async def _contracts_show(admin: Management, args: argparse.Namespace) -> None:
    contract = await admin.get_contract(args.name)
    keys = await admin.list_keys(args.name)
    if args.format == "json":
        print(
            json.dumps({**_contract_row(contract), "keys": [_key_row(k) for k in keys]}, indent=2)
        )
        return
    _print_contracts([contract], "table")
    for key in keys:
        print("    key " + "  ".join(f"{k}={v}" for k, v in _key_row(key).items() if v is not None))


async def _contracts_update(admin: Management, args: argparse.Namespace) -> None:
    contract = await admin.update_contract(
        args.name,
        status=args.status,
        limits=_given_limits(args),
        model_limits=dict(args.model_limits),
        models=args.models,
        all_models=args.all_models,
        prices=dict(args.price),
    )
    _print_contracts([contract], "table")


async def _contracts_suspend(admin: Management, args: argparse.Namespace) -> None:
    _print_contracts([await admin.set_status(args.name, "suspended")], "table")


async def _contracts_resume(admin: Management, args: argparse.Namespace) -> None:
    _print_contracts([await admin.set_status(args.name, "active")], "table")


def _given_limits(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name, _, _ in _LIMITS if hasattr(args, name)}


def _contract_row(c: Contract) -> dict:
    return {
        "name": c.name,
        "status": c.status,
        "limits": c.limits.to_json(),
        "model_limits": {m: v.to_json() for m, v in c.model_limits.items()},
        "models": list(c.models) if c.models is not None else None,
        "prices": {m: {"input": p.input, "output": p.output} for m, p in c.prices.items()},
    }


def _print_contracts(contracts: list[Contract], fmt: str) -> None:
    rows = [_contract_row(c) for c in contracts]
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
async def _keys_create(admin: Management, args: argparse.Namespace) -> None:
    expires = None
    if args.expires_in_days is not None:
        expires = datetime.now(UTC) + timedelta(days=args.expires_in_days)
    secret, key = await admin.create_key(args.contract, name=args.name, expires_at=expires)
    _print_secret(f"Key {key.id} ({key.prefix}...) for contract {key.contract_name!r}", secret)


async def _keys_list(admin: Management, args: argparse.Namespace) -> None:
    rows = [_key_row(k) for k in await admin.list_keys(args.contract)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items() if v is not None))


async def _keys_revoke(admin: Management, args: argparse.Namespace) -> None:
    key = await admin.revoke_key(args.key)
    print(
        f"Key {key.id} ({key.prefix}...) of contract {key.contract_name!r} "
        f"revoked at {_iso(key.revoked_at)}"
    )


async def _keys_rotate(admin: Management, args: argparse.Namespace) -> None:
    secret, key = await admin.rotate_key(args.key)
    _print_secret(
        f"Key {key.id} ({key.prefix}...) for contract {key.contract_name!r} replaces "
        f"{args.key if args.key.isdigit() else args.key[:12]} (now revoked)",
        secret,
    )


def _key_row(k: ApiKey) -> dict:
    return {
        "id": k.id,
        "prefix": k.prefix,
        "contract": k.contract_name,
        "name": k.name,
        "created_at": _iso(k.created_at),
        "last_used_at": _iso(k.last_used_at),
        "revoked_at": _iso(k.revoked_at),
        "expires_at": _iso(k.expires_at),
    }


def _print_secret(what: str, secret: str) -> None:
    # Printed once to the terminal, never logged: the database keeps only its hash.
    print(f"{what}; shown once, store it now:")
    print(secret)


# Usage ---------------------------------------------------------------------------------
async def _usage(admin: Management, args: argparse.Namespace) -> None:
    since = parse_moment(args.since, param="--since") if args.since else None
    until = parse_moment(args.until, param="--until") if args.until else None
    report = await admin.usage(args.contract, since, until, args.by)
    print(render_usage(report, args.format, args.by), end="")


# Admin tokens --------------------------------------------------------------------------
async def _tokens_create(admin: Management, args: argparse.Namespace) -> None:
    secret, token = await admin.create_admin_token(args.name)
    _print_secret(f"Admin token {token.id} ({token.prefix}...) named {token.name!r}", secret)


async def _tokens_list(admin: Management, args: argparse.Namespace) -> None:
    for t in await admin.list_admin_tokens():
        fields = {
            "id": t.id,
            "prefix": t.prefix,
            "name": t.name,
            "created_at": _iso(t.created_at),
            "last_used_at": _iso(t.last_used_at),
            "revoked_at": _iso(t.revoked_at),
        }
        print("  ".join(f"{k}={v}" for k, v in fields.items() if v is not None))


async def _tokens_revoke(admin: Management, args: argparse.Namespace) -> None:
    token = await admin.revoke_admin_token(args.token)
    print(f"Admin token {token.id} ({token.prefix}...) revoked at {_iso(token.revoked_at)}")


# Argument types ------------------------------------------------------------------------
def _optional(kind: type) -> Callable[[str], object]:
    """A limit's value; ``none`` (None) removes it. An option not given keeps the current one."""

    def parse(text: str):
        if text.lower() == "none":
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None

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
    except (ValueError, TypeError, ModelhubError):
        raise argparse.ArgumentTypeError(f"expected MODEL={{json limits}}, got {text!r}") from None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")
