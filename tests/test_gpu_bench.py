"""bench/gpu.py's code path on CPU: the tiny config runs every mode and batch size in seconds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


def test_gpu_bench_tiny_runs_both_modes_and_reports_the_ceiling_fraction(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("flexguard_gpu_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "rows.json"
    rows = bench.main(["--tiny", "--batch-sizes", "1,3", "--json", str(out)])
    assert [(r["mode"], r["batch_size"]) for r in rows] == [("score-only", 1), ("score-only", 3),
                                                            ("reasoning", 1), ("reasoning", 3)]
    for row in rows:
        assert row["items"] == 2 * row["batch_size"] and row["items_per_s"] > 0 and row["p50_s"] > 0
        assert abs(row["fraction_of_ceiling"] - row["items_per_s"] / bench.CEILING[row["mode"]]) < 1e-9
    assert out.read_text().count('"mode"') == 4
    printed = capsys.readouterr().out
    assert "of the §5 ceiling" in printed and "shared prefix" in printed
