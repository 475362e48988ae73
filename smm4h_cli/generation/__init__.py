"""Synthetic positive posts from an LLM: the paper's few-shot prompts (§3.1, Appendix A.1) and
attribute-conditioned prompts, through one OpenAI-SDK code path (OpenAI, any OpenAI-compatible
server, or the embedded SmolLM2 behind llama.cpp's server), with a resumable call cache.

Modules: ``prompts`` (task definitions and prompt building), ``attributes`` (attribute sets and
their even draws), ``backends`` (which server, checked before work; the embedded server),
``parsing`` (numbered lists into posts), ``dedup`` (exact and near duplicates), ``engine``
(concurrent calls, retries, cache) and ``generate`` (the whole run).
"""
