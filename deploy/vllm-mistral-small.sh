#!/usr/bin/env bash
# Serve Mistral Small 3.2 24B Instruct (2506) with vLLM, as modelhub's upstream engine.
#
# The flags follow Mistral's model card for this checkpoint:
#   --tokenizer-mode/--config-format/--load-format mistral  use the native checkpoint and
#                                 tekken.json (mistral-common), the same tokenizer modelhub
#                                 counts with, so the gateway's prompt counts match vLLM's
#   --tool-call-parser mistral --enable-auto-tool-choice   OpenAI tool calls from [TOOL_CALLS]
#   --limit-mm-per-prompt        images per request (keep in step with MODELHUB_MAX_IMAGES_PER_REQUEST)
#   --max-model-len 131072       the 128k context the catalog promises
#   --quantization fp8           fp8 weights (dynamic quantization on H100/H200), as the catalog says
#
# One H100 80 GB holds the fp8 weights (~25 GB) and a 128k KV cache for a few sequences;
# run one replica per GPU and list them all in MODELHUB_BACKENDS.
set -euo pipefail

MODEL="${MODEL:-mistralai/Mistral-Small-3.2-24B-Instruct-2506}"
PORT="${PORT:-8001}"
IMAGES="${IMAGES:-8}"

exec vllm serve "$MODEL" \
  --host 0.0.0.0 --port "$PORT" \
  --served-model-name mistral-small-3.2 \
  --tokenizer-mode mistral --config-format mistral --load-format mistral \
  --tool-call-parser mistral --enable-auto-tool-choice \
  --limit-mm-per-prompt "{\"image\": $IMAGES}" \
  --max-model-len 131072 \
  --quantization fp8 \
  --gpu-memory-utilization 0.92 \
  ${VLLM_API_KEY:+--api-key "$VLLM_API_KEY"} \
  "$@"
