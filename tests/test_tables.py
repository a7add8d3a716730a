"""teacli.tables: tables that read at 80 columns, the columns naming a row whole in every one."""

from __future__ import annotations

import io

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from teacli.tables import Column, FittingTable, print_at_full_width

NAMES = ["teacache@0.2", "teacache@0.8", "taylorseer-with-a-long-name@N5O1"]
FIGURES = ("computed/total", "median seconds", "spread seconds", "speedup", "efficiency", "PSNR dB", "peak memory")


def console(width: int) -> Console:
    return Console(file=io.StringIO(), width=width, color_system=None)


def lines(out: Console) -> list[str]:
    return out.file.getvalue().splitlines()


def bench_like() -> FittingTable:
    table = FittingTable(
        [Column("config", justify="left", names_row=True), *(Column(header) for header in FIGURES)],
        title="a bench with a title long enough to wrap at eighty columns, which it does at its words",
        caption="the caption: what each figure means, in words that wrap at the console's width",
    )
    for name in NAMES:
        table.add_row(name, "3/6", "0.123", "0.004", "1.52x", "0.987", "inf (identical)", "492 MiB")
    return table


def test_at_80_columns_the_figures_stack_under_the_naming_column_and_no_line_is_wider():
    table = bench_like()
    out = console(80)
    table.print(out)
    text = out.file.getvalue()
    assert all(cell_len(line) <= 80 for line in lines(out))
    stacked = table.stacked(out)
    assert len(stacked) > 1
    for part in stacked:  # every table starts with the config column, its names whole on one line
        assert part.columns[0].header == "config"
        assert all(name in text for name in NAMES)
    assert sum(text.count(f"│ {name} ") for name in NAMES) == len(NAMES) * len(stacked)
    assert all(header in text for header in FIGURES) and "inf (identical)" in text
    # The caption runs under the last table, as wide as the console, not as narrow as the table.
    assert lines(out)[-1].strip() == "the caption: what each figure means, in words that wrap at the console's width"


def test_a_wide_console_gets_one_table_with_everything():
    table = bench_like()
    out = console(220)
    table.print(out)
    assert len(table.stacked(out)) == 1
    header = next(line for line in lines(out) if "config" in line)
    assert all(figure in header for figure in FIGURES)


def test_a_flexible_column_folds_instead_of_stacking():
    table = FittingTable(
        [Column("branch", "left", names_row=True), Column("calls"), Column("timeline", "left", flexible=True)]
    )
    table.add_row("cond", "100", Text("C" + "." * 98 + "F"))
    out = console(80)
    table.print(out)
    assert len(table.stacked(out)) == 1
    assert all(cell_len(line) <= 80 for line in lines(out))
    assert "".join(line.split("│")[3].strip() for line in lines(out) if line.count("│") == 4) == "C" + "." * 98 + "F"


def test_narrowed_keeps_the_preferred_columns_that_fit_and_names_the_rest():
    table = FittingTable([Column("name", names_row=True), Column("a" * 30), Column("b" * 30), Column("c")])
    table.add_row("x", "1", "2", "3")
    shown, left_out = table.narrowed(console(60), preference=("c", "b" * 30, "a" * 30))
    assert [column.header for column in shown.columns] == ["name", "b" * 30, "c"]
    assert left_out == ["a" * 30]
    shown, left_out = table.narrowed(console(60), preference=("c",), wide=True)
    assert len(shown.columns) == 4 and left_out == []


def test_print_at_full_width_draws_past_the_console_and_puts_the_width_back():
    table = FittingTable([Column("name", names_row=True), *(Column(f"column {i}") for i in range(12))])
    table.add_row("x", *(str(i) for i in range(12)))
    out = console(80)
    print_at_full_width(table.table(range(13), None, None), out)
    assert max(cell_len(line) for line in lines(out)) > 80 and out.width == 80
    assert all(f"column {i}" in out.file.getvalue() for i in range(12))


# --- the reports that use it, at 80 columns ----------------------------------------------------------------------


def test_the_per_branch_table_at_80_columns_keeps_branch_names_and_the_whole_timeline():
    from teacli.engine.decision import Decision
    from teacli.engine.stats import StepRecord, TeaCacheStats
    from teacli.generation.report import GenerationSummary, render_generation

    stats = TeaCacheStats()
    labels = []
    for module in ("transformer", "transformer_2"):
        for branch in ("cond", "uncond"):
            marks = [Decision.FORCED, *([Decision.CACHED, Decision.COMPUTED] * 24), Decision.FORCED]
            labels.append(f"{module}/{branch}")
            for step, decision in enumerate(marks):
                stats.add(StepRecord(0, module, branch, step, None, None, 0.0, decision, 0.01))
    summary = GenerationSummary("wan2.2-t2v-a14b", "WanTransformer3DModel", 0.2, "published", 50, 1.0, stats)
    out = console(80)
    render_generation(summary, out)
    assert all(cell_len(line) <= 80 for line in lines(out))
    timeline = "F" + ".C" * 24 + "F"
    for label in labels:  # the label whole on one line; at 80 columns the timeline goes on in a table of its own
        assert any(line.startswith(f"│ {label} ") and timeline in line for line in lines(out))
        assert any(line.startswith(f"│ {label} ") and " 24 │" in line for line in lines(out))


def test_the_prompts_table_and_the_frontier_at_80_columns():
    from types import SimpleNamespace

    from teacli.batch.report import render_prompts
    from teacli.bench.report import render_frontier

    rank = {"rank": 0, "device": "cuda:0", "made": 48, "skipped": 0, "computed": 800, "forced": 96, "cached": 1792}
    rank |= {"calls": 2688, "seconds": 412.5, "estimated_speedup": 2.41}
    summary = SimpleNamespace(
        model="teacli-shapes", prompts=48, prompts_file="benchmarks/shapes-prompts.txt", ranks=[rank], made=48,
        skipped=0, seconds=420.0, world_size=1, out_dir="out", manifest="out/manifest.jsonl",
    )  # fmt: skip
    out, table = console(80), console(80)
    render_prompts(summary, out)
    frontier = [
        {"method": method, "calls": calls, "psnr": 30 + calls / 3, "ssim": 0.98, "checker": 95.0}
        for method in ("teacache", "teacache-uniform", "dbcache")
        for calls in (12, 16, 20, 24, 32)
    ]
    render_frontier(frontier, "frontier: PSNR dB / SSIM at equal computed calls", table)
    assert all(cell_len(line) <= 80 for line in [*lines(out), *lines(table)])
    text = out.file.getvalue()
    assert all(column in text for column in ("device", "skipped", "computed", "seconds", "speedup", "2.41x"))
    text = table.file.getvalue()
    assert all(f"{calls} calls" in text for calls in (12, 16, 20, 24, 32))
    assert text.count("│ teacache-uniform ") == text.count("┏") > 1  # in every stacked frontier table, whole
