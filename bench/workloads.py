"""The engine benchmark's workloads, generated here from a seed (nothing is downloaded).

Every prompt is plain text in one fixed layout (no server's chat template), tokenized once
by the GGUF's own tokenizer; each server receives those exact token ids (or, for a server
that only takes text, the text, whose count the run then checks) and a fixed output length
with ``ignore_eos``.

- ``short``: the eight short open-ended prompts of earlier runs, 128 tokens out.
- ``multiturn``: conversations that share one ~2,000-token system prompt. Turn k's prompt is
  the system prompt, the earlier turns and the new user message, so each turn extends the
  previous prompt (what a prefix cache can reuse). User messages and answers have
  ShareGPT-shaped (log-normal) lengths, scaled down to fit two cores: user median 60 tokens,
  answers median 64 tokens, clipped to 16-128. The earlier answers in the history are the
  workload's own text (not what the server generated), so every server sees the same ids.
- ``long``: distinct prompts of 2,000-6,000 tokens (uniform), 32 tokens out.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Prompt", "Tokenizer", "Workloads"]

SYSTEM_TOKENS = 2000
SHORT_PROMPTS = [
    "Write a long, detailed essay about the history of the Roman Empire.",
    "Explain in detail how a steam engine works, step by step.",
    "Tell a long story about a sailor who finds a hidden island.",
    "Describe the water cycle in great detail for a school textbook.",
    "Write a detailed travel guide to the city of Lisbon.",
    "Explain how computers store numbers, with many examples.",
    "Describe a day in the life of a medieval blacksmith, in detail.",
    "Write a long letter to a friend about learning to play the piano.",
]
_WORDS = """the of and to in is was for on that with as by at from this which be are it an or
have has had not but were they their one all been more when there can we would some what
time into only other new out about these also two first may after so like over such many
people most made then years could through where much before way well between should because
each those work water long little very state world still part own must under while last
three place know right year same great since back both during house system number good life
city small found end form country school take point old course later large group day
several never things thought family river road music order light power market story money
plan report study rate field history image letter island bridge engine garden harbour
village mountain teacher student lesson morning evening window kitchen table paper question
answer reason result change value price season weather forest valley ocean signal machine
careful quiet simple strong early recent common public private local central modern
ancient bright gentle heavy narrow useful""".split()  # noqa: SIM905


@dataclass(frozen=True)
class Prompt:
    text: str
    ids: list[int]
    max_tokens: int


class Tokenizer:
    """The GGUF's tokenizer (llama.cpp, vocabulary only), as the servers tokenize."""

    def __init__(self, gguf: Path):
        import logging

        import llama_cpp

        from modelhub.engines.llamacpp import LlamaTokenizer

        # llama.cpp logs every key it reads; keep errors only (as modelhub's engine does).
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self._model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), params)
        if not self._model:
            raise RuntimeError(f"cannot read the vocabulary of {gguf}")
        self._tokenizer = LlamaTokenizer(llama_cpp.llama_model_get_vocab(self._model))

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_bos=True)


def _words(rng: random.Random, tokens: int) -> str:
    """Sentences of common words, about ``tokens`` tokens long (~1.1 tokens a word)."""
    words = [rng.choice(_WORDS) for _ in range(max(1, round(tokens / 1.1)))]
    sentences, i = [], 0
    while i < len(words):
        n = rng.randint(6, 16)
        sentence = " ".join(words[i : i + n])
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
        i += n
    return " ".join(sentences)


def _sharegpt(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return int(min(high, max(low, rng.lognormvariate(math.log(median), sigma))))


class Workloads:
    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        self.system = "You are a helpful assistant for a library. " + _words(
            random.Random(13), SYSTEM_TOKENS
        )

    def _prompt(self, text: str, max_tokens: int) -> Prompt:
        return Prompt(text, self._tok.encode(text), max_tokens)

    def short(self) -> list[list[Prompt]]:
        return [[self._prompt(f"{p}\n\n", 128)] for p in SHORT_PROMPTS]

    def multiturn(self, seed: int, conversations: int, turns: int) -> list[list[Prompt]]:
        """``conversations`` fresh conversations (seeded), each ``turns`` requests."""
        rng = random.Random(seed)
        items = []
        for _ in range(conversations):
            history = self.system
            item = []
            for _ in range(turns):
                history += "\n\nUser: " + _words(rng, _sharegpt(rng, 60, 0.9, 8, 400))
                history += "\n\nAssistant:"
                answer = _sharegpt(rng, 64, 0.6, 16, 128)
                item.append(self._prompt(history, answer))
                history += " " + _words(rng, answer)
            items.append(item)
        return items

    def long(self, seed: int, count: int) -> list[list[Prompt]]:
        rng = random.Random(seed)
        return [
            [self._prompt(_words(rng, rng.randint(2000, 6000)) + "\n\n", 32)] for _ in range(count)
        ]
