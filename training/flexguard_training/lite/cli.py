"""`flexguard train lite`: fine-tune the embedded cross-encoder, then rebuild, evaluate and write the card.

    flexguard train lite --out flexguard_plugins/lite/weights          # train + evaluate (about an hour, 2 cores)
    flexguard train lite --out DIR --eval-only                         # re-evaluate a trained folder

The run resumes from `<work-dir>/checkpoint.pt` when it is there (same data and configuration).
Writes `adapter.safetensors`, `lite.json` and `card.json` (command, sources with licences, seed, held-out
metrics) into `--out`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .data import HELDOUT_CAP, HELDOUT_SOURCES, HELDOUT_SPLITS, MIXES, TRAIN_SOURCES
from .train import TRAIN_META, TrainConfig

log = logging.getLogger("flexguard_training.lite")


def make_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or "flexguard train lite", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="folder for the adapter, lite.json and card.json (default: the "
                        "shipped weights folder)")
    parser.add_argument("--work-dir", default=None,
                        help="checkpoints (default: <lite cache>/train-<out name>)")
    parser.add_argument("--data-root", default=None,
                        help="public data folder (default: FLEXGUARD_DATA or ../shared/data)")
    parser.add_argument("--train-sources", default=",".join(TRAIN_SOURCES), help="comma-separated source names")
    parser.add_argument("--heldout-sources", default=",".join(HELDOUT_SOURCES),
                        help="comma-separated WHOLE sources kept out of training for evaluation "
                        "('' for none)")
    parser.add_argument("--budget", type=int, default=24000,
                        help="training rows before balancing (sources + augmentation)")
    parser.add_argument("--mix", choices=sorted(MIXES), default="r10a",
                        help="what the recipe draws besides the sources (data.MIXES; r10a: the shipped weights)")
    parser.add_argument("--augment-share", type=float, default=0.3, help="share of the budget given to augmentation")
    parser.add_argument("--flexbench", action="append", default=[], help="FlexBench-format CSV to train on "
                        "(severity_level + text columns); repeatable")
    parser.add_argument("--teacher", action="append", default=[], help="teacher JSONL (prompt, response?, score, "
                        "categories) to train on, scores mapped to tiers; repeatable")
    parser.add_argument("--heldout-cap", type=int, default=HELDOUT_CAP, help="evaluation rows per held-out source")
    parser.add_argument("--epochs", type=float, default=TrainConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--head-lr", type=float, default=TrainConfig.head_lr)
    parser.add_argument("--init-from", default=None, help="lite model folder to fine-tune instead of starting "
                        "from fresh LoRA and heads (e.g. the shipped weights, with a lower --lr)")
    parser.add_argument("--rank", type=int, default=TrainConfig.rank)
    parser.add_argument("--max-tokens", type=int, default=TrainConfig.max_tokens, help="training sequence length")
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast (default: where the CPU has native bf16)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--skip-eval", action="store_true", help="train and save only")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the model already in --out")
    parser.add_argument("--compare-fp32", action="store_true", help="also evaluate the fp32 ONNX (int8 cost)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    args = make_parser().parse_args(argv)
    from flexguard_plugins.lite.build import WEIGHTS_DIR, cache_dir

    out = Path(args.out) if args.out else WEIGHTS_DIR
    root = Path(args.data_root) if args.data_root else None
    train_names = [s for s in args.train_sources.split(",") if s]
    heldout_names = [s for s in args.heldout_sources.split(",") if s]
    command = "flexguard train lite " + " ".join(sys.argv[1:] if argv is None else argv)
    if not args.eval_only:
        from .data import extra_examples, training_examples
        from .train import native_bf16, save_adapter, train

        started = time.perf_counter()
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr,
                             rank=args.rank, max_tokens=args.max_tokens, threads=args.threads, seed=args.seed,
                             max_steps=args.max_steps, init_from=args.init_from,
                             bf16=native_bf16() if args.bf16 is None else args.bf16)
        try:
            examples, counts = training_examples(train_names, heldout_names, root, budget=args.budget,
                                                 augment_share=args.augment_share, seed=args.seed,
                                                 extra=extra_examples(args.flexbench, args.teacher),
                                                 mix=MIXES[args.mix])
        except ValueError as error:
            raise SystemExit(str(error)) from error
        if not examples:
            raise SystemExit("no training data")
        log.info("training rows %d from %d sources", len(examples), len(counts))
        work = Path(args.work_dir) if args.work_dir else cache_dir() / f"train-{out.resolve().name}"
        model = train(examples, work, config, progress=not args.no_progress)
        save_adapter(model, out, config)
        meta = {"command": command, "seed": args.seed, "config": config.__dict__, "train_rows": counts,
                "train_sources": train_names, "heldout_sources": heldout_names, "budget": args.budget,
                "augment_share": args.augment_share, "mix": args.mix,
                "heldout_splits": HELDOUT_SPLITS if MIXES[args.mix].heldout_split else {},
                "extra_training_files": {"flexbench": args.flexbench, "teacher": args.teacher},
                "train_seconds": round(time.perf_counter() - started, 1)}
        (out / TRAIN_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        log.info("wrote %s (%.0fs)", out, meta["train_seconds"])
    if args.skip_eval:
        return 0
    from .evaluate import write_card

    card = write_card(out, heldout_names, root, seed=args.seed, cap=args.heldout_cap, compare_fp32=args.compare_fp32,
                      eval_command=command if args.eval_only else None, progress=not args.no_progress)
    log.info("held-out: %s", json.dumps(card.get("headline", {})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
