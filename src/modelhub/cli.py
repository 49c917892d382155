"""``modelhub serve | tokenize | contracts | keys | usage | admin-tokens``.

Every command validates its configuration first; problems go to stderr, one line each,
with exit status 2. Errors of a command go to stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from modelhub import __version__
from modelhub.errors import ConfigurationError
from modelhub.settings import Settings, load_settings

__all__ = ["main"]

log = logging.getLogger("modelhub")

# Flags that override a setting of the same name.
_OVERRIDES = ("host", "port", "catalog_dir", "data_dir", "database_url")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {n: getattr(args, n) for n in _OVERRIDES if getattr(args, n, None) is not None}
    if getattr(args, "no_auth", False):
        overrides["auth"] = False
    return load_settings(**overrides)


def _first_key_printer(settings: Settings):
    def show(key: str) -> None:
        # Printed once to the terminal, never logged: the database keeps only its hash.
        print(
            "\nCreated contract 'default' with this API key (shown once, store it now):\n"
            f"\n    {key}\n\nTry it: curl -H 'Authorization: Bearer {key}' "
            f"{_address(settings)}/v1/models\n",
            flush=True,
        )

    return show


def _address(settings: Settings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"


def _serve(args: argparse.Namespace) -> int:
    from modelhub.api.app import create_app
    from modelhub.api.server import DrainingServer, server_config
    from modelhub.logs import configure_logging
    from modelhub.preflight import check_config

    settings = _settings(args)
    check_config(settings)
    configure_logging(settings)
    log.info(
        "modelhub %s on %s (database: %s)",
        __version__,
        _address(settings),
        _database(settings),
    )
    if not settings.auth:
        log.warning(
            "authentication is OFF (--no-auth / MODELHUB_AUTH=false): anyone who can reach "
            "%s can use every model and the admin API",
            _address(settings),
        )
    app = create_app(settings, on_first_key=_first_key_printer(settings))
    DrainingServer(
        server_config(app, settings, log_config=None),
        app.state.drain,
        settings.drain_timeout_s,
    ).run()
    return 0


def _database(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


async def _tokenize(settings: Settings, model: str, body: dict) -> dict:
    from modelhub.catalog import Catalog, load_cards
    from modelhub.metrics import Metrics
    from modelhub.schemas.chat import ChatCompletionRequest
    from modelhub.serving.deployment import Deployment
    from modelhub.serving.prepare import PromptStage

    cards = [c for c in load_cards(settings.catalog_dir) if c.id == model] or load_cards(
        settings.catalog_dir
    )
    deployment = Deployment(
        Catalog(cards, backends={k: v for k, v in settings.backends.items() if k == model}),
        settings,
        Metrics(),
    )
    await deployment.start()
    try:
        request = ChatCompletionRequest.model_validate({**body, "model": model})
        stage = PromptStage(deployment, settings)
        return await stage.count(stage.resolve(request, generating=False), request)
    finally:
        await deployment.close()


def _tokenize_command(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from modelhub.errors import ModelhubError

    settings = _settings(args)
    try:
        body = json.load(sys.stdin)
        result = asyncio.run(_tokenize(settings, args.model, body))
    except (ValueError, ValidationError, ModelhubError) as exc:
        print(f"modelhub tokenize: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: result[k] for k in ("prompt_tokens", "image_tokens", "max_model_len")}))
    return 0


def _parser() -> argparse.ArgumentParser:
    from modelhub.platform.admin import add_commands, storage_options

    parser = argparse.ArgumentParser(
        prog="modelhub", description="A self-hostable AI model hub.", parents=[storage_options()]
    )
    parser.add_argument("--version", action="version", version=f"modelhub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="serve the OpenAI-compatible API", parents=[storage_options()]
    )
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--catalog", dest="catalog_dir", type=Path, help="directory of model TOML files"
    )
    serve.add_argument("--no-auth", action="store_true", help="accept requests without an API key")
    serve.set_defaults(func=_serve)

    tokenize = sub.add_parser(
        "tokenize", help="count a chat request's prompt tokens (JSON on stdin)"
    )
    tokenize.add_argument("--model", required=True)
    tokenize.add_argument("--catalog", dest="catalog_dir", type=Path)
    tokenize.set_defaults(func=_tokenize_command)

    add_commands(sub, _settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigurationError as error:
        for problem in error.problems:
            print(f"modelhub: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
