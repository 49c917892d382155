"""Write a tiny, randomly initialised Mistral Small 3.2 for llama.cpp: GGUF + vision projector.

Right plumbing, nonsense words: the text model has the real Tekken v11 vocabulary (131,072
tokens, so prompts tokenize exactly as mistral-common counts them) and the real vision
geometry (patch 14 px, spatial merge 2, images up to 1540 px, one [IMG_BREAK] per row),
but 2 layers of width 64 with random weights.

What llama.cpp's own converter (``convert_hf_to_gguf.py --mistral-format``, vendored in
llama-cpp-python's sdist) would write, and where this copies it from:

- text model: architecture ``llama`` (``conversion/mistral.py``: Mistral checkpoints without
  ``llama_4_scaling``, such as Small 3.2, load as llama); tokenizer model ``gpt2`` with
  pre-tokenizer ``tekken``, the tokens and merges from gguf-py's ``MistralVocab`` (the class
  the converter uses), BOS added, EOS not. Rope base 1e9 as in Small 3.1/3.2's params.json.
- projector: architecture ``clip``, projector type ``pixtral`` (``conversion/pixtral.py``),
  SiLU-gated RMS-norm ViT with 2D rope, then Mistral Small 3.1's patch merger
  (``mm.input_norm`` + ``mm.patch_merger``), the two-layer adapter ``mm.1``/``mm.2``, and the
  ``[IMG_BREAK]`` embedding (``v.token_embd.img_break``, a row of the text embeddings) that
  ``tools/mtmd/models/pixtral.cpp`` inserts after each row but the last.

Usage: ``python scripts/make_tiny_mistral.py OUT_DIR [--check]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["check_tiny_mistral", "make_tiny_mistral"]

# Bump when the files' content changes, so cached copies from an older script are not reused.
_VERSION = 1
_GGUF = f"tiny-mistral-small-3.2-v{_VERSION}.gguf"
_MMPROJ = f"tiny-mistral-small-3.2-mmproj-v{_VERSION}.gguf"

# Text model: small, but with Small 3.2's shape quirks (head_dim * n_heads != hidden size,
# grouped-query attention).
_N_EMBD, _N_LAYER, _N_FF, _N_HEAD, _N_HEAD_KV, _HEAD_DIM = 64, 2, 128, 4, 2, 32
_CONTEXT = 131_072
_ROPE_BASE = 1_000_000_000.0
_NORM_EPS = 1e-5

# Vision encoder (Pixtral) and projector; geometry from Small 3.2's params.json.
_V_EMBD, _V_LAYER, _V_FF, _V_HEAD = 32, 1, 64, 2
_PATCH, _MERGE, _MAX_IMAGE = 14, 2, 1540
# Pixtral's normalisation (mistral-common's image encoder uses the same constants).
_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def _tokenizer_file(out_dir: Path) -> Path:
    """``tekken.json`` next to the weights, as a real checkpoint ships it."""
    from modelhub.formats.tekken import v11_tokenizer_file

    target = out_dir / "tekken.json"
    if not target.exists():
        with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
            v11_tokenizer_file(Path(scratch)).replace(target)
    return target


def _random(rng: np.random.Generator, *shape: int, dtype=np.float32) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(dtype)


def _write_text_model(path: Path, tokenizer_dir: Path, rng: np.random.Generator) -> np.ndarray:
    """The llama-architecture GGUF; returns the token embeddings (the projector needs a row)."""
    import gguf
    from gguf.vocab import MistralVocab

    vocab = MistralVocab(tokenizer_dir)
    tokens, scores, types = zip(*vocab.all_tokens(), strict=True)

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name("Tiny random Mistral Small 3.2 (test fixture)")
    writer.add_context_length(_CONTEXT)
    writer.add_embedding_length(_N_EMBD)
    writer.add_block_count(_N_LAYER)
    writer.add_feed_forward_length(_N_FF)
    writer.add_head_count(_N_HEAD)
    writer.add_head_count_kv(_N_HEAD_KV)
    writer.add_key_length(_HEAD_DIM)
    writer.add_value_length(_HEAD_DIM)
    writer.add_rope_dimension_count(_HEAD_DIM)
    writer.add_rope_freq_base(_ROPE_BASE)
    writer.add_layer_norm_rms_eps(_NORM_EPS)
    writer.add_vocab_size(vocab.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    writer.add_tokenizer_model(vocab.gguf_tokenizer_model)
    writer.add_tokenizer_pre("tekken")
    writer.add_token_list(list(tokens))
    writer.add_token_scores(list(scores))
    writer.add_token_types(list(types))
    writer.add_token_merges(vocab.extract_vocab_merges_from_model())
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_unk_token_id(vocab.unk_id)
    writer.add_pad_token_id(vocab.pad_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    embeddings = _random(rng, vocab.vocab_size, _N_EMBD, dtype=np.float16)
    names = gguf.TENSOR_NAMES
    T = gguf.MODEL_TENSOR
    writer.add_tensor(names[T.TOKEN_EMBD] + ".weight", embeddings)
    writer.add_tensor(names[T.OUTPUT_NORM] + ".weight", np.ones(_N_EMBD, np.float32))
    writer.add_tensor(
        names[T.OUTPUT] + ".weight", _random(rng, vocab.vocab_size, _N_EMBD, dtype=np.float16)
    )
    for b in range(_N_LAYER):
        layer = {
            T.ATTN_NORM: np.ones(_N_EMBD, np.float32),
            T.ATTN_Q: _random(rng, _N_HEAD * _HEAD_DIM, _N_EMBD),
            T.ATTN_K: _random(rng, _N_HEAD_KV * _HEAD_DIM, _N_EMBD),
            T.ATTN_V: _random(rng, _N_HEAD_KV * _HEAD_DIM, _N_EMBD),
            T.ATTN_OUT: _random(rng, _N_EMBD, _N_HEAD * _HEAD_DIM),
            T.FFN_NORM: np.ones(_N_EMBD, np.float32),
            T.FFN_GATE: _random(rng, _N_FF, _N_EMBD),
            T.FFN_UP: _random(rng, _N_FF, _N_EMBD),
            T.FFN_DOWN: _random(rng, _N_EMBD, _N_FF),
        }
        for kind, tensor in layer.items():
            writer.add_tensor(names[kind].format(bid=b) + ".weight", tensor)
    _finish(writer)
    return embeddings


def _write_projector(path: Path, img_break_embedding: np.ndarray, rng: np.random.Generator) -> None:
    import gguf

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ])
    writer.add_name("Tiny random Mistral Small 3.2 vision projector (test fixture)")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type(gguf.VisionProjectorType.PIXTRAL)
    writer.add_vision_projection_dim(_N_EMBD)
    writer.add_vision_image_size(_MAX_IMAGE)
    writer.add_vision_patch_size(_PATCH)
    writer.add_vision_embedding_length(_V_EMBD)
    writer.add_vision_feed_forward_length(_V_FF)
    writer.add_vision_block_count(_V_LAYER)
    writer.add_vision_head_count(_V_HEAD)
    writer.add_vision_attention_layernorm_eps(_NORM_EPS)
    writer.add_vision_image_mean(list(_IMAGE_MEAN))
    writer.add_vision_image_std(list(_IMAGE_STD))
    writer.add_vision_use_silu(True)
    writer.add_vision_spatial_merge_size(_MERGE)

    tensors = {
        "v.patch_embd.weight": _random(rng, _V_EMBD, 3, _PATCH, _PATCH),
        "v.pre_ln.weight": np.ones(_V_EMBD, np.float32),
        "mm.input_norm.weight": np.ones(_V_EMBD, np.float32),
        "mm.patch_merger.weight": _random(rng, _V_EMBD, _V_EMBD * _MERGE * _MERGE),
        "mm.1.weight": _random(rng, _N_EMBD, _V_EMBD),
        "mm.1.bias": np.zeros(_N_EMBD, np.float32),
        "mm.2.weight": _random(rng, _N_EMBD, _N_EMBD),
        "mm.2.bias": np.zeros(_N_EMBD, np.float32),
        "v.token_embd.img_break": img_break_embedding.astype(np.float32),
    }
    for b in range(_V_LAYER):
        tensors |= {
            f"v.blk.{b}.ln1.weight": np.ones(_V_EMBD, np.float32),
            f"v.blk.{b}.attn_q.weight": _random(rng, _V_EMBD, _V_EMBD),
            f"v.blk.{b}.attn_k.weight": _random(rng, _V_EMBD, _V_EMBD),
            f"v.blk.{b}.attn_v.weight": _random(rng, _V_EMBD, _V_EMBD),
            f"v.blk.{b}.attn_out.weight": _random(rng, _V_EMBD, _V_EMBD),
            f"v.blk.{b}.ln2.weight": np.ones(_V_EMBD, np.float32),
            f"v.blk.{b}.ffn_gate.weight": _random(rng, _V_FF, _V_EMBD),
            f"v.blk.{b}.ffn_up.weight": _random(rng, _V_FF, _V_EMBD),
            f"v.blk.{b}.ffn_down.weight": _random(rng, _V_EMBD, _V_FF),
        }
    for name, tensor in tensors.items():
        writer.add_tensor(name, tensor)
    _finish(writer)


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def make_tiny_mistral(out_dir: Path, *, seed: int = 0) -> tuple[Path, Path | None, Path]:
    """(GGUF, vision projector, tekken.json) in ``out_dir``; files already there are reused."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tekken = _tokenizer_file(out_dir)
    gguf_path, mmproj_path = out_dir / _GGUF, out_dir / _MMPROJ
    if gguf_path.exists() and mmproj_path.exists():
        return gguf_path, mmproj_path, tekken

    from mistral_common.tokens.tokenizers.base import SpecialTokens
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    rng = np.random.default_rng(seed)
    # Written under temporary names and renamed, so a concurrent or interrupted run never
    # leaves a half-written file that a later run would take as done.
    partial_gguf = gguf_path.with_name(f".{gguf_path.name}.{os.getpid()}")
    partial_mmproj = mmproj_path.with_name(f".{mmproj_path.name}.{os.getpid()}")
    embeddings = _write_text_model(partial_gguf, tekken.parent, rng)
    tokenizer = MistralTokenizer.from_file(str(tekken)).instruct_tokenizer.tokenizer
    img_break = tokenizer.get_special_token(SpecialTokens.img_break.value)
    _write_projector(partial_mmproj, embeddings[img_break], rng)
    partial_gguf.replace(gguf_path)
    partial_mmproj.replace(mmproj_path)
    return gguf_path, mmproj_path, tekken


def check_tiny_mistral(gguf_path: Path, tekken_path: Path, text: str) -> dict:
    """Load the GGUF with llama.cpp; compare its tokens for ``text`` with mistral-common's and
    render the control tokens the chat format relies on. Returns what was found."""
    import llama_cpp
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    tokenizer = MistralTokenizer.from_file(str(tekken_path)).instruct_tokenizer.tokenizer
    llm = llama_cpp.Llama(str(gguf_path), n_ctx=512, n_threads=1, verbose=False)
    try:
        expected = tokenizer.encode(text, bos=True, eos=False)
        actual = llm.tokenize(text.encode(), add_bos=True, special=False)
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        controls = {}
        for name in (
            "[TOOL_CALLS]",
            "[ARGS]",
            "[CALL_ID]",
            "[IMG]",
            "[IMG_BREAK]",
            "[IMG_END]",
            "</s>",
        ):
            token = tokenizer.get_special_token(name)
            buf = (llama_cpp.ctypes.c_char * 64)()
            n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
            controls[name] = buf[:n].decode()
        return {
            "mistral_common": expected,
            "llama_cpp": actual,
            "controls": controls,
            "n_vocab": llm.n_vocab(),
            "eos": llm.token_eos(),
        }
    finally:
        llm.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--check", action="store_true", help="load it with llama.cpp and compare")
    args = parser.parse_args(argv)
    gguf_path, mmproj_path, tekken = make_tiny_mistral(args.out_dir)
    print(
        json.dumps({"gguf": str(gguf_path), "mmproj": str(mmproj_path), "tokenizer": str(tekken)})
    )
    if args.check:
        found = check_tiny_mistral(gguf_path, tekken, "Hello, world! Héllo 1234 ünïcödé")
        print(json.dumps(found))
        if found["mistral_common"] != found["llama_cpp"]:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
