"""The embedded scorer's language gate: what it costs on English traffic, and what it catches, per source and language.

    python bench/lite_language.py [--show 5]

English (false undecided: real English traffic the gate calls unsupported), per source from ../shared/data:
Alpaca harmless instructions (refusal_direction val + test), AdvBench, hh-rlhf harmless-base test (the dialogue as
the reply's context, both replies), BeaverTails 30k test (question and reply), and the ToxicChat rows py3langid
labels English (skipped when py3langid is not installed; it is not a dependency). Each item is read as the backend
reads it: the judged text, and in response mode the prompt's end too.

Foreign: the requests and wrapped payloads written for tests/test_lite_language.py, through `FlexGuard.load()` at
moderate (allowed = neither flagged nor undecided), next to what the scorer says of them with every language accepted
(the gate left out), and the held-out texts written after the gate's thresholds were fixed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.test_lite_language


def english_sources() -> dict[str, list[tuple[str, str | None]]]:
    from flexguard_training.sources import load_source

    sources = {
        "alpaca_harmless (val+test)": [(r.prompt, None) for name in ("alpaca_harmless_val", "alpaca_harmless_test")
                                       for r in load_source(name)],
        "advbench": [(r.prompt, None) for r in load_source("advbench")],
        "hh_rlhf_harmless (test)": [(r.prompt, r.response) for r in load_source("hh_rlhf_harmless")],
        "beavertails_30k_test": [(r.prompt, r.response) for r in load_source("beavertails")],
    }
    try:
        import py3langid
    except ImportError:
        print("py3langid not installed: ToxicChat skipped (pip install py3langid to select its English rows)")
    else:
        rows = [r.prompt for r in load_source("toxic_chat")]
        sources["toxic_chat (English by py3langid)"] = [(t, None) for t in rows if py3langid.classify(t)[0] == "en"]
    return sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", type=int, default=5, help="undecided English items to print per source")
    args = parser.parse_args()

    from flexguard_plugins import FlexGuard
    from flexguard_plugins.language import LanguageGate, known_languages
    from flexguard_plugins.lite import REQUEST_TOKENS
    from flexguard_plugins.types import ModerationItem
    from tests.test_lite_language import HELDOUT, MIXED, REQUESTS

    gate = LanguageGate()

    def unsupported(prompt: str, response: str | None) -> str | None:  # what the facade reads before lite scores
        return gate.unsupported_in(ModerationItem(prompt, response), REQUEST_TOKENS)

    print("English traffic: false undecided")
    for name, items in english_sources().items():
        started = time.perf_counter()
        found = [(code, p, r) for p, r in items if (code := unsupported(p, r))]
        ms = 1000 * (time.perf_counter() - started) / len(items)
        print(f"  {name:36s} {len(found):4d} / {len(items):5d} = {100 * len(found) / len(items):5.2f} %  "
              f"({ms:.2f} ms/item)  {Counter(c for c, _, _ in found).most_common(5)}")
        for code, prompt, response in found[:args.show]:
            print(f"      {code}: {(response or prompt)[:110]!r}")

    items = [(lang, text, None) for lang, texts in REQUESTS.items() for text in texts]
    items += [("wrapped", prompt, response) for prompt, response in MIXED.values()]
    guard = FlexGuard.load()
    everyone = FlexGuard.load(languages=sorted(known_languages()))
    batch = [{"prompt": p, "response": r} for _, p, r in items]
    gated = guard.check_batch(batch, strictness="moderate")
    ungated = everyone.check_batch(batch, strictness="moderate")
    print("\nwritten harmful requests at moderate: undecided / allowed with the gate / allowed without it (every "
          "language accepted)")
    for lang in [*REQUESTS, "wrapped"]:
        rows = [(g, u) for (name, _, _), g, u in zip(items, gated, ungated, strict=True) if name == lang]
        print(f"  {lang:8s} {sum(g.failed for g, _ in rows)}/{len(rows)} undecided, "
              f"{sum(not g.flagged for g, _ in rows)} allowed; without the gate {sum(not u.flagged for _, u in rows)} "
              f"allowed, scores {[round(u.score, 1) for _, u in rows]}")
    held = [gate.unsupported(text) for _, _, text in HELDOUT]
    missed = [(lang, text) for (lang, _, text), code in zip(HELDOUT, held, strict=True) if code is None]
    print(f"\nheld-out texts: {len(held) - len(missed)}/{len(held)} found unsupported; missed: {missed}")
    guard.close()
    everyone.close()


if __name__ == "__main__":
    main()
