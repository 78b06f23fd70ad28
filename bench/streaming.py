"""Guard prefill of a streamed reply on the vLLM backend: re-checks of the reply so far vs windowed re-checks.

A tiny Qwen3 taught FlexGuard's answer format (built here, offline, as the tests build it) judges a harmless
reply streamed in 50-token chunks through `FlexGuardRunnable.stream` (with its question, `with_prompt`). For each
way of checking it prints the prefill tokens the engine computed (prompt tokens minus prefix-cache hits,
`VLLMEngine.prompt_tokens - cached_tokens`) per check and in total, next to one whole-reply check on a cold cache:

- "reply so far": what the wrappers do now, a re-check every `--recheck-chars` of new text (default 200, the
  least they allow) reading the reply from its start, then the whole-reply check;
- "windows": what they did before, each 50-token chunk judged with the 50 characters before it, then the
  whole-reply check.

    python bench/streaming.py                           # replies of 1,500 and 2,000 tokens
    python bench/streaming.py --tokens 1500 --recheck-chars 200 400
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests' model builders


def windowed_costs(guard, engine, chunks: list[str], context_chars: int = 50) -> list[int]:
    """The old way: each chunk judged with `context_chars` before it, then the whole reply."""
    from tests.test_streaming_cache import QUESTION, computed

    costs, text = [], ""
    for chunk in chunks:
        before = computed(engine)
        guard.check(QUESTION, text[-context_chars:] + chunk)
        costs.append(computed(engine) - before)
        text += chunk
    before = computed(engine)
    guard.check(QUESTION, text)
    return [*costs, computed(engine) - before]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1500, 2000], help="reply lengths (tiny tokens)")
    parser.add_argument("--recheck-chars", type=int, nargs="+", default=[200, 400], help="new text per re-check")
    args = parser.parse_args()

    from flexguard_plugins import FlexGuard
    from flexguard_plugins.backends.vllm import VLLMBackend, VLLMEngine
    from tests.fixtures_vllm import GUARD_RUBRIC, train_tiny_guard
    from tests.model_builders import build_tiny_qwen3
    from tests.test_streaming_cache import QUESTION, computed, reply_chunks, reset_cache, stream_costs

    folder = Path(tempfile.mkdtemp(prefix="flexguard-streaming-"))
    rubric = folder / "rubric.txt"
    rubric.write_text(GUARD_RUBRIC, encoding="utf-8")
    model = train_tiny_guard(build_tiny_qwen3(folder / "base", hidden_size=128, num_layers=2), folder / "guard",
                             rubric)
    engine = VLLMEngine(model, dtype="float32", max_model_len=2048, enable_prefix_caching=True, seed=0)
    try:
        backend = VLLMBackend(model, engine=engine, system_prompt_path=rubric, reasoning=False)
        with FlexGuard(backend) as guard:
            print(f"tiny Qwen3, max_model_len 2048, one read holds {backend.max_content_tokens} reply tokens; "
                  f"prefill tokens computed (prompt - prefix-cache hits)")
            for tokens in args.tokens:
                chunks = reply_chunks(backend.tokenizer, tokens)
                reset_cache(engine)
                before = computed(engine)
                guard.check(QUESTION, "".join(chunks))
                whole = computed(engine) - before
                print(f"\nreply {tokens} tokens ({len(''.join(chunks))} chars) in {len(chunks)} chunks of 50 "
                      f"tokens; one whole-reply check (cold): {whole}")
                for chars in args.recheck_chars:
                    reset_cache(engine)
                    costs = stream_costs(guard, engine, chunks, recheck_chars=chars)
                    print(f"  reply so far, re-check every {chars} chars: {sum(costs)} = {sum(costs) / whole:.2f}x "
                          f"over {len(costs)} checks {costs}")
                reset_cache(engine)
                costs = windowed_costs(guard, engine, chunks)
                print(f"  windows (50 tokens + 50 chars before): {sum(costs)} = {sum(costs) / whole:.2f}x over "
                      f"{len(costs)} checks, per check {min(costs[:-1])}-{max(costs[:-1])}, last {costs[-1]}")
    finally:
        engine.shutdown()


if __name__ == "__main__":
    main()
