"""The Tekken v11 tokenizer of Mistral Small 3.2, with or without the model's weights.

Facts and where they come from:
- Mistral Small 3.2 (2506) ships ``tekken.json`` with ``config.version = "v11"``; tool calls
  are written ``[TOOL_CALLS]name[ARGS]{json}`` and tool call ids are 9 alphanumeric
  characters (mistral-common's v11 encoder).
- Its vision settings are patch 14 px, longest side 1540 px, spatial merge 2 (the
  checkpoint's ``params.json`` vision encoder; shared/DESIGN.md).
- With no weights on the machine, the same vocabulary is the one mistral-common ships as
  ``tekken_240911.json`` (131,072 tokens, 1,000 special slots); what it lacks for v11 is an
  explicit special token list (mistral-common refuses v11 files without one) and the image
  block. Ranks 0-19 are mistral-common's historical special tokens; ``[ARGS]`` and
  ``[CALL_ID]`` take two of the reserved slots after them. A token's rank does not change
  any count, so prompt counts are exact either way.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from mistral_common.tokens.tokenizers.base import SpecialTokens
from mistral_common.tokens.tokenizers.tekken import Tekkenizer

__all__ = ["IMAGE_CONFIG", "v11_tokenizer_file"]

IMAGE_CONFIG = {"image_patch_size": 14, "max_image_size": 1540, "spatial_merge_size": 2}
_EXTRA_V11 = {32: SpecialTokens.args, 33: SpecialTokens.call_id}
_FILE_NAME = "tekken-v11-mistral-small-3.2.json"


def _special_tokens(num_special: int) -> list[dict]:
    known = {info["rank"]: info["token_str"] for info in Tekkenizer.DEPRECATED_SPECIAL_TOKENS}
    known.update({rank: str(token) for rank, token in _EXTRA_V11.items()})
    return [
        {
            "rank": rank,
            "token_str": known.get(rank, Tekkenizer.SPECIAL_TOKEN_TEMPLATE.format(id=rank)),
            "is_control": True,
        }
        for rank in range(num_special)
    ]


def v11_tokenizer_file(cache_dir: Path) -> Path:
    """Write (once) and return the v11 tokenizer file built from mistral-common's vocabulary."""
    target = cache_dir / _FILE_NAME
    if target.exists():
        return target
    source = files("mistral_common") / "data" / "tekken_240911.json"
    data = json.loads(source.read_text(encoding="utf-8"))
    data["config"]["version"] = "v11"
    data["special_tokens"] = _special_tokens(data["config"]["default_num_special_tokens"])
    data["image"] = dict(IMAGE_CONFIG)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tmp")
    partial.write_text(json.dumps(data), encoding="utf-8")
    partial.replace(target)  # atomic: concurrent first uses never read half a file
    return target
