"""Images into a llama.cpp context: a vision projector (mmproj) through llama.cpp's mtmd.

The prompt's token ids come from the model's format (mistral-common for Mistral): an image
is a span of ``[IMG]`` rows separated by ``[IMG_BREAK]`` and closed by ``[IMG_END]``. This
module fills exactly that span of positions in one sequence, so the engine skips the
span's token ids and goes on decoding after it.

Two things are needed for llama.cpp to fill the same number of positions mistral-common
counted:

- Geometry. mtmd's Pixtral preprocessor rounds the image to the nearest multiple of
  28 px and caps it at 1,024 tokens; mistral-common caps the longest side at 1540 px and
  rounds *up*. So the image goes in already resized by mistral-common's own image encoder
  (its pixels, back in 8-bit), whose sides are multiples of 28 that mtmd keeps as they are,
  and the token caps are opened to the largest grid mistral-common can produce.
- The closing token. mtmd's image chunk holds the ``[IMG]`` and ``[IMG_BREAK]`` embeddings
  (one break after each row but the last); ``[IMG_END]`` follows as a text chunk. Both are
  decoded here, and the total is checked against mistral-common's count.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import TYPE_CHECKING, Self

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp
from llama_cpp._logger import llama_log_callback
from mistral_common.protocol.instruct.chunk import ImageChunk
from mistral_common.tokens.tokenizers.image import (
    DATASET_MEAN,
    DATASET_STD,
    ImageConfig,
    ImageEncoder,
    SpecialImageIDs,
)

from modelhub.errors import ModelhubError

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["ImageKVFullError", "VisionEncoder", "VisionEncoderError"]

# Mistral Small 3.2's vision settings (its params.json; see formats/tekken.py).
SMALL_3_2_IMAGES = ImageConfig(image_patch_size=14, max_image_size=1540, spatial_merge_size=2)


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
        image_config: ImageConfig = SMALL_3_2_IMAGES,
    ) -> None:
        # mtmd logs every step to stderr by default; through llama-cpp-python's callback it
        # obeys the "llama-cpp-python" logger's level, as llama.cpp's own logs do.
        mtmd_cpp.mtmd_log_set(llama_log_callback, None)
        mtmd_cpp.mtmd_helper_log_set(llama_log_callback, None)
        self._vocab = llama_cpp.llama_model_get_vocab(llama_model)
        ids = SpecialImageIDs(
            img=self._control_token("[IMG]"),
            img_break=self._control_token("[IMG_BREAK]"),
            img_end=self._control_token("[IMG_END]"),
        )
        self._encoder = ImageEncoder(image_config, ids)
        merged_patch = image_config.image_patch_size * image_config.spatial_merge_size
        max_side_tokens = -(-image_config.max_image_size // merged_patch)  # 55 for 1540 px

        params = mtmd_cpp.mtmd_context_params_default()
        params.print_timings = False
        params.n_threads = n_threads
        params.warmup = False  # it encodes a dummy image at load: seconds on CPU, no use here
        # Let mtmd take any grid mistral-common produces (see the module docstring).
        params.image_min_tokens = 1
        params.image_max_tokens = max_side_tokens * max_side_tokens
        self._ctx = mtmd_cpp.mtmd_init_from_file(str(mmproj_path).encode(), llama_model, params)
        if not self._ctx:
            raise VisionEncoderError(
                f"llama.cpp could not load the vision projector {mmproj_path}."
            )
        if not mtmd_cpp.mtmd_support_vision(self._ctx):
            self.close()
            raise VisionEncoderError(f"{mmproj_path} has no vision encoder.")
        self._marker = mtmd_cpp.mtmd_default_marker()

    def _control_token(self, text: str) -> int:
        tokens = (llama_cpp.llama_token * 4)()
        n = llama_cpp.llama_tokenize(
            self._vocab, text.encode(), len(text.encode()), tokens, 4, False, True
        )
        if n != 1:
            raise VisionEncoderError(f"The model's vocabulary has no {text} token.")
        return tokens[0]

    def close(self) -> None:
        if self._ctx:
            mtmd_cpp.mtmd_free(self._ctx)
            self._ctx = None

    def n_tokens(self, image: Image) -> int:
        """How many prompt positions the image takes (mistral-common's count)."""
        return len(self._encoder(ImageChunk(image=image)).tokens)

    def _bitmap(self, image: Image) -> tuple[ctypes.c_void_p, int]:
        """The image as mistral-common prepares it, in 8 bits, and its token count."""
        encoding = self._encoder(ImageChunk(image=image))
        # Undo the normalisation (mtmd applies the same mean/std itself), keep the resize.
        pixels = encoding.image.transpose(1, 2, 0) * np.asarray(DATASET_STD) + np.asarray(
            DATASET_MEAN
        )
        rgb = np.ascontiguousarray(np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8))
        height, width, _ = rgb.shape
        data = rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        bitmap = mtmd_cpp.mtmd_bitmap_init(width, height, data)  # copies the pixels
        if not bitmap:
            raise VisionEncoderError("llama.cpp could not take the image.")
        return bitmap, len(encoding.tokens)

    def eval_image(
        self, ctx: llama_cpp.llama_context_p, image: Image, seq_id: int, n_past: int, n_batch: int
    ) -> int:
        """Decode the image's whole span (``[IMG]``... ``[IMG_END]``) into ``seq_id`` at
        ``n_past``; returns the position after it. No logits are requested.

        On an error the sequence may hold part of the span: remove its cells from ``n_past``.
        """
        bitmap, expected = self._bitmap(image)
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
            if covered != expected:
                raise VisionEncoderError(
                    f"The projector gives {covered} positions for the image, the prompt has {expected}."
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
