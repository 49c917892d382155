"""Engines run models: the embedded llama.cpp engine, upstream OpenAI-compatible servers."""
