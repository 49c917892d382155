"""Images into a llama.cpp context: a vision projector (mmproj) through llama.cpp's mtmd.

The prompt's token ids come from the model's format (mistral-common for Mistral): an image
is a span of ``[IMG]`` rows separated by ``[IMG_BREAK]`` and closed by ``[IMG_END]``. This
module fills exactly that span of positions in one sequence, so the engine skips the
span's token ids and goes on decoding after it.

Geometry belongs to the format, which resizes each image once and hands over the pixels
the model must see (``PromptImage.image``) with the number of positions it counted. mtmd's
own preprocessor would resize again (Pixtral's rounds to the nearest multiple of the merged
patch and caps the image at 1,024 tokens); its token limits are opened wide here, so an
image whose sides are already multiples of the merged patch goes through untouched, and
the positions mtmd fills are checked against the format's count.

The closing token: mtmd's image chunk holds the ``[IMG]`` and ``[IMG_BREAK]`` embeddings
(one break after each row but the last); ``[IMG_END]`` follows as a text chunk. Both are
decoded here.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import TYPE_CHECKING, Self

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp
from llama_cpp._logger import llama_log_callback

from modelhub.errors import ModelhubError

if TYPE_CHECKING:
    from modelhub.formats.base import PromptImage

__all__ = ["ImageKVFullError", "VisionEncoder", "VisionEncoderError"]

# mtmd's cap on one image's tokens, set far above any format's own (Mistral's: 55 x 55):
# images arrive sized by the format, and mtmd must not shrink them again.
_NO_TOKEN_CAP = 1 << 16


class VisionEncoderError(ModelhubError):
    """The projector could not be loaded or failed on an image (a server-side fault)."""


class ImageKVFullError(VisionEncoderError):
    """The KV cache had no room for the image's positions (llama_decode's status 1): the
    engine can free cells (preempt a sequence) and try again."""


class VisionEncoder:
    """One mmproj bound to one llama model; evaluates images into sequences of a context.

    Not thread-safe: call it from the engine's decode thread, between decode steps.
    """

    def __init__(
        self,
        mmproj_path: Path,
        llama_model: llama_cpp.llama_model_p,
        n_threads: int,
    ) -> None:
        # mtmd logs every step to stderr by default; through llama-cpp-python's callback it
        # obeys the "llama-cpp-python" logger's level, as llama.cpp's own logs do.
        mtmd_cpp.mtmd_log_set(llama_log_callback, None)
        mtmd_cpp.mtmd_helper_log_set(llama_log_callback, None)
        params = mtmd_cpp.mtmd_context_params_default()
        params.print_timings = False
        params.n_threads = n_threads
        params.warmup = False  # it encodes a dummy image at load: seconds on CPU, no use here
        # Let mtmd take any grid the format produces (see the module docstring).
        params.image_min_tokens = 1
        params.image_max_tokens = _NO_TOKEN_CAP
        self._ctx = mtmd_cpp.mtmd_init_from_file(str(mmproj_path).encode(), llama_model, params)
        if not self._ctx:
            raise VisionEncoderError(
                f"llama.cpp could not load the vision projector {mmproj_path}."
            )
        if not mtmd_cpp.mtmd_support_vision(self._ctx):
            self.close()
            raise VisionEncoderError(f"{mmproj_path} has no vision encoder.")
        self._marker = mtmd_cpp.mtmd_default_marker()

    def close(self) -> None:
        if self._ctx:
            mtmd_cpp.mtmd_free(self._ctx)
            self._ctx = None

    @staticmethod
    def _bitmap(image: PromptImage) -> ctypes.c_void_p:
        rgb = np.ascontiguousarray(np.asarray(image.image.convert("RGB"), dtype=np.uint8))
        height, width, _ = rgb.shape
        data = rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        bitmap = mtmd_cpp.mtmd_bitmap_init(width, height, data)  # copies the pixels
        if not bitmap:
            raise VisionEncoderError("llama.cpp could not take the image.")
        return bitmap

    def eval_image(
        self,
        ctx: llama_cpp.llama_context_p,
        image: PromptImage,
        seq_id: int,
        n_past: int,
        n_batch: int,
    ) -> int:
        """Decode the image's whole span (``[IMG]``... ``[IMG_END]``) into ``seq_id`` at
        ``n_past``; returns the position after it. No logits are requested.

        On an error the sequence may hold part of the span: remove its cells from ``n_past``.
        """
        bitmap = self._bitmap(image)
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        try:
            text = mtmd_cpp.mtmd_input_text(
                text=self._marker, text_len=len(self._marker), add_special=False, parse_special=True
            )
            bitmaps = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap)
            if mtmd_cpp.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text), bitmaps, 1) != 0:
                raise VisionEncoderError("llama.cpp could not tokenize the image.")
            selected = self._image_span(chunks)
            covered = sum(mtmd_cpp.mtmd_input_chunk_get_n_pos(chunk) for chunk in selected)
            if covered != image.n_tokens:
                raise VisionEncoderError(
                    f"The projector gives {covered} positions for the image, "
                    f"the prompt has {image.n_tokens}."
                )
            position = llama_cpp.llama_pos(n_past)
            for chunk in selected:
                rc = mtmd_cpp.mtmd_helper_eval_chunk_single(
                    self._ctx,
                    ctx,
                    chunk,
                    position.value,
                    seq_id,
                    n_batch,
                    False,
                    ctypes.byref(position),
                )
                if rc == 1:
                    raise ImageKVFullError("The KV cache has no room for the image.")
                if rc != 0:
                    raise VisionEncoderError(f"llama.cpp failed to evaluate the image (code {rc}).")
            return position.value
        finally:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            mtmd_cpp.mtmd_bitmap_free(bitmap)

    @staticmethod
    def _image_span(chunks) -> list:
        """The image chunk and the text that closes it (``[IMG_END]``); empty text dropped."""
        selected = []
        for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
            chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
            if (
                mtmd_cpp.mtmd_input_chunk_get_type(chunk) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_IMAGE
                or selected
                and mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk) > 0
            ):
                selected.append(chunk)
        return selected

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
