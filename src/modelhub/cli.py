"""``modelhub serve | tokenize | contracts | keys | usage``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from modelhub.settings import Settings

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for name in ("host", "port", "catalog_dir"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "no_auth", False):
        overrides["auth"] = False
    return Settings(**overrides)


def _print_first_key(key: str) -> None:
    # Printed once to the terminal, never logged: the database keeps only its hash.
    print(
        "\nCreated contract 'default' with this API key (shown once, store it now):\n"
        f"\n    {key}\n\nTry it: curl -H 'Authorization: Bearer {key}' "
        "http://127.0.0.1:8000/v1/models\n",
        flush=True,
    )


def _serve(args: argparse.Namespace) -> int:
    from modelhub.api.app import create_app
    from modelhub.api.server import DrainingServer, server_config

    settings = _settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings, on_first_key=_print_first_key)
    DrainingServer(server_config(app, settings), app.state.drain, settings.drain_timeout_s).run()
    return 0


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
    parser = argparse.ArgumentParser(prog="modelhub", description="A self-hostable AI model hub.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the OpenAI-compatible API")
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

    from modelhub.platform.admin import add_commands

    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
