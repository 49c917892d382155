"""Contracts and API keys for the gateway benchmark, created in modelhub's database.

``python -m bench.provision --contracts 10 --keys 1000`` (with ``MODELHUB_DATA_DIR`` set)
creates the contracts ``bench-0`` .. ``bench-9`` with limits that are checked on every
request but never reached, and the keys round-robin over them (key i belongs to contract
i mod 10), and prints the keys' secrets as a JSON list. One process, so that a thousand
keys take seconds rather than a CLI start each.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from modelhub.platform.contracts import Limits
from modelhub.platform.service import open_store
from modelhub.settings import Settings

__all__ = ["provision"]

# Far above any rate the bench reaches, so limits are computed but never refuse.
UNREACHED = Limits(rps=1_000_000, burst=1_000_000, rpm=1_000_000_000, tpm=10**12)


async def provision(contracts: int, keys: int) -> list[str]:
    engine, store = await open_store(Settings())
    try:
        names = [f"bench-{i}" for i in range(contracts)]
        for name in names:
            await store.create_contract(name, limits=UNREACHED)
        return [
            (await store.create_key(names[i % contracts], name=f"key-{i}"))[0] for i in range(keys)
        ]
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contracts", type=int, default=10)
    parser.add_argument("--keys", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(provision(args.contracts, args.keys))))


if __name__ == "__main__":
    main()
