"""Put on a peer server's PYTHONPATH: name lookups for anything but loopback fail at once.

The benchmark must never reach beyond 127.0.0.1; some peers try to (LiteLLM fetches
tokenizers from the Hugging Face Hub on some code paths). Failing fast also keeps their
retry back-offs out of the measured latencies. Each refusal is logged with its stack so
that the cause can be found and configured away.
"""

import socket
import sys
import traceback

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "", None}
_getaddrinfo = socket.getaddrinfo


def _loopback_only(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if name not in _LOOPBACK:
        print(f"[loopback_guard] refused lookup of {name!r}", file=sys.stderr)
        traceback.print_stack(limit=25, file=sys.stderr)
        raise OSError(f"bench loopback guard: {name} is not loopback")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_only
