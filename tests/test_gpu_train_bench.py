"""bench/gpu_train.py's code path on CPU: the tiny config runs SFT and GRPO steps of the 8B recipe in seconds."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_train.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("flexguard_gpu_train_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = module.torch.get_num_threads()
    module.torch.set_num_threads(1)  # as the bench's --tiny: a busy CPU makes more threads spin for long
    yield module
    module.torch.set_num_threads(threads)


def test_tiny_run_reports_sft_and_grpo_and_the_sft_steps_move_the_adapter(bench, capsys):
    result = bench.main(["--tiny", "--skip-inference", "--sft-steps", "3", "--grpo-steps", "2"])
    sft, grpo = result["sft"], result["grpo"]
    assert sft["steps"] == 3 and grpo["steps"] == 2 and result["inference_rc"] is None
    assert all(math.isfinite(x) for x in sft["losses"] + grpo["losses"])
    assert sft["tokens_per_s"] > 0 and sft["step_s"] > 0 and grpo["generated_tokens_per_s"] > 0
    assert sft["adapter_change"] > 0  # the optimizer really stepped
    assert 0.0 <= grpo["zero_variance_share"] <= 1.0
    # The recipe's beta is 0: groups of equal rewards have zero advantages, so no update at all.
    if grpo["zero_variance_share"] == 1.0:
        assert grpo["adapter_change"] == 0.0
    else:
        assert grpo["adapter_change"] > 0
    assert sft["fraction_of_peak"] is None and grpo["fraction_of_peak"] is None  # no known peak on CPU
    printed = capsys.readouterr().out
    for expected in ("SFT train: 3 steps", "GRPO train: 2 steps", "generated tokens/s", "zero-variance groups",
                     "fraction of peak n/a", "adapter change", "s wall"):
        assert expected in printed


def test_completion_mask_cuts_at_the_first_eos_and_can_drop_truncated_completions(bench):
    completions = bench.torch.tensor([[5, 2, 7, 2], [5, 5, 5, 5]])
    assert bench.completion_mask(completions, 2, False).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert bench.completion_mask(completions, 2, True).tolist() == [[1, 1, 0, 0], [0, 0, 0, 0]]


def test_grpo_update_moves_the_adapter_with_unequal_rewards_or_a_kl_term_only(bench, tmp_path):
    from tests.model_builders import build_tokenizer

    torch = bench.torch
    _, recipe = bench.load_recipe()
    model = bench.add_lora(bench.build_model(build_tokenizer(tmp_path), True, "cpu", torch.float32), recipe, True)
    model.train()
    optimizer = bench.make_optimizer(model, recipe)
    ids = torch.randint(3, 400, (8, 24), generator=torch.Generator().manual_seed(0))
    mask, loss_mask = torch.ones_like(ids), torch.ones((8, 6), dtype=torch.long)
    update = dict(micro=4, temperature=1.0, autocast=bench.contextlib.nullcontext)

    advantages, zero_share = bench.group_advantages(torch.zeros(8), 8)
    assert zero_share == 1.0 and advantages.abs().max() == 0
    before = bench.adapter_state(model)
    bench.grpo_update(model, optimizer, ids, mask, 6, loss_mask, advantages, beta=0.0, **update)
    assert bench.change_norm(model, before) == 0.0

    advantages, zero_share = bench.group_advantages(torch.tensor([3.0, -3.0] * 4), 8)
    assert zero_share == 0.0 and abs(float(advantages.mean())) < 1e-6 and float(advantages.std()) > 0.9
    bench.grpo_update(model, optimizer, ids, mask, 6, loss_mask, advantages, beta=0.0, **update)
    assert bench.change_norm(model, before) > 0

    # now the policy differs from the base: the KL term to the adapter-disabled model alone moves it
    with torch.no_grad(), model.disable_adapter():
        ref = bench.completion_logprobs(model, ids, mask, 6, 1.0)
    before, optimizer = bench.adapter_state(model), bench.make_optimizer(model, recipe)  # no momentum left
    bench.grpo_update(model, optimizer, ids, mask, 6, loss_mask, torch.zeros(8), beta=0.04, ref_logps=ref, **update)
    assert bench.change_norm(model, before) > 0
