"""``evalkit compare`` and the report figure, on two seeded random models over the same 12 documents per task."""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import pytest

from evalkit.cli.main import main
from evalkit.reports.compare import compare, paired_table
from evalkit.reports.report import reference_tables
from evalkit.results.files import load_results
from evalkit.run.pipeline import run
from evalkit.stats.significance import wilson_interval
from evalkit.types import EvalkitError, RunConfig
from .conftest import TOKENIZER_JSON

TASKS = {"piqa": "validation", "arc_challenge": "test", "lambada_openai": "test"}
N_DOCS = 12


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, data_dir) -> tuple[Path, Path]:
    """Results of random:pythia-14m with seeds 1 and 2 on the first 12 documents of three tasks (no --limit)."""
    root = tmp_path_factory.mktemp("compare")
    for task, split in TASKS.items():
        lines = (data_dir / task / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:N_DOCS]
        (root / "data" / task).mkdir(parents=True)
        (root / "data" / task / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths = []
    for seed in (1, 2):
        config = RunConfig(model="random:pythia-14m", tasks=tuple(TASKS), tokenizer=str(TOKENIZER_JSON),
                           data_dir=str(root / "data"), seed=seed, dtype="float32", device="cpu",
                           bootstrap_iters=200, output_dir=str(root / f"seed{seed}"))
        paths.append(run(config, progress=False).results_path)
    return paths[0], paths[1]


def assert_valid_png(path: Path) -> None:
    """PNG signature, an IHDR chunk with a correct CRC and a positive size, and IEND at the end."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    (crc,) = struct.unpack(">I", data[29:33])
    assert crc == zlib.crc32(data[12:29])
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82"


def test_compare_a_run_with_itself_finds_nothing(two_runs, tmp_path):
    a, _ = two_runs
    out = compare([str(a), str(a)], tmp_path / "self.md", iters=300, with_references=False)
    (table,) = out.paired
    assert [(r.task, r.metric) for r in table.rows] == [
        ("piqa", "acc"), ("piqa", "acc_norm"), ("arc_challenge", "acc"), ("arc_challenge", "acc_norm"),
        ("lambada_openai", "acc"), ("lambada_openai", "perplexity")]
    for r in table.rows:
        assert (r.delta, r.low, r.high, r.p_value, r.p_holm, r.significant) == (0.0, 0.0, 0.0, 1.0, 1.0, False)
    text = out.report_path.read_text(encoding="utf-8")
    assert "| piqa | acc | 12 |" in text
    assert text.count("| +0.0000 | [+0.0000, +0.0000] |") == 5
    assert "**yes**" not in text
    assert f"> **Note:** A and B are the same file ({a}): every Δ is 0 and nothing can be significant" in text


def test_compare_two_seeded_models_one_cell_by_hand(two_runs, tmp_path):
    a, b = two_runs
    out = compare([str(a), str(b)], tmp_path / "ab.md", iters=500, seed=9)
    docs_a = load_results(a)["tasks"]["piqa"]["documents"]["acc"]
    docs_b = load_results(b)["tasks"]["piqa"]["documents"]["acc"]
    only_a = sum(1 for x, y in zip(docs_a, docs_b) if x == 1 and y == 0)
    only_b = sum(1 for x, y in zip(docs_a, docs_b) if x == 0 and y == 1)
    assert only_a + only_b > 0, "the two seeded models should disagree on some PIQA document"
    n = only_a + only_b
    p = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n)
    delta = (sum(docs_b) - sum(docs_a)) / N_DOCS

    row = next(r for r in out.paired[0].rows if (r.task, r.metric) == ("piqa", "acc"))
    assert (row.only_a, row.only_b, row.n) == (only_a, only_b, N_DOCS)
    assert row.delta == pytest.approx(delta)
    assert row.p_value == pytest.approx(p)
    assert row.low <= delta <= row.high
    assert row.p_value <= row.p_holm <= 1.0
    text = out.report_path.read_text(encoding="utf-8")
    expected = (f"| piqa | acc | 12 | {sum(docs_a) / 12:.4f} | {sum(docs_b) / 12:.4f} | {delta:+.4f} | "
                f"[{row.low:+.4f}, {row.high:+.4f}] | McNemar exact | {only_a} / {only_b} | {p:.3g} |")
    assert expected in text
    assert "## B: random:pythia-14m (float32) vs A: random:pythia-14m (float32) (paired)" in text


def test_compare_against_the_card_is_unpaired_and_checked_by_hand(two_runs, tmp_path):
    a, b = two_runs
    out = compare([str(a), str(b)], tmp_path / "ref.md", iters=300)
    card = next(t for t in out.references if t.run_label.startswith("A:") and t.title.startswith("GPT-NeoX-20B"))
    row = next(r for r in card.rows if (r.reference, r.task) == ("GPT-NeoX-20B", "piqa"))
    measured = load_results(a)["tasks"]["piqa"]["metrics"]["acc"]
    z = (measured["value"] - 0.779) / math.sqrt(0.010**2 + measured["stderr"] ** 2)
    assert row.delta == pytest.approx(measured["value"] - 0.779)
    assert row.z == pytest.approx(z)
    assert row.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    low, high = wilson_interval(measured["value"], N_DOCS)
    assert (row.low, row.high) == (pytest.approx(low), pytest.approx(high))
    assert row.in_interval == (low <= 0.779 <= high)
    pythia = next(t for t in out.references if t.run_label.startswith("A:") and t.title.startswith("Pythia"))
    ppl = next(r for r in pythia.rows if (r.reference, r.metric) == ("pythia-70m", "perplexity"))
    assert (ppl.published, ppl.z, ppl.p_value, ppl.stderr_source) == (142.43, None, None, "not published")
    arc = next(r for r in pythia.rows if (r.reference, r.task) == ("pythia-70m", "arc_challenge"))
    assert arc.published_stderr == pytest.approx(math.sqrt(0.1809 * 0.8191 / 1171))
    assert arc.stderr_source == "from value and n"
    text = out.report_path.read_text(encoding="utf-8")
    assert "(unpaired)" in text and "Published in run's CI" in text


def test_compare_refuses_different_documents(two_runs, tmp_path):
    a, b = two_runs
    other = json.loads(Path(b).read_text(encoding="utf-8"))
    other["tasks"]["piqa"]["documents"]["doc_id"][3] = 500
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(other), encoding="utf-8")
    with pytest.raises(EvalkitError) as info:
        compare([str(a), str(moved)], tmp_path / "x.md", iters=10)
    assert str(info.value) == (
        f"cannot compare task 'piqa': {a} scored 12 documents and {moved} scored 12 (11 in common; they first "
        f"differ at position 3); a paired comparison needs the same documents, or one run's all among the other's: "
        f"run both with the same --seed, or without --limit")
    assert not (tmp_path / "x.md").exists()


def test_compare_pairs_a_pilot_run_with_its_larger_run_on_their_common_documents(two_runs, tmp_path):
    """Nested subsets (docs/subsets.md): a --limit 6 pilot of PIQA is compared with the 12-document run of another
    model on the pilot's 6 documents; the row's values are worked out from both files' per-document accs."""
    a, b = two_runs
    root = Path(a).parents[3]  # <root>/seed1/results/<model>/<time>.json
    config = RunConfig(model="random:pythia-14m", tasks=("piqa",), tokenizer=str(TOKENIZER_JSON),
                       data_dir=str(root / "data"), seed=1, limit=6, dtype="float32", device="cpu",
                       bootstrap_iters=0, output_dir=str(tmp_path / "pilot"))
    pilot = run(config, progress=False).results_path
    small = json.loads(Path(pilot).read_text(encoding="utf-8"))["tasks"]["piqa"]["documents"]
    full = json.loads(Path(b).read_text(encoding="utf-8"))["tasks"]["piqa"]["documents"]
    where = {d: i for i, d in enumerate(full["doc_id"])}
    acc_a, acc_b = small["acc"], [full["acc"][where[d]] for d in small["doc_id"]]
    assert len(acc_a) == 6 and len(full["acc"]) == 12
    out = compare([str(pilot), str(b)], tmp_path / "x.md", iters=200)
    row = next(r for r in out.paired[0].rows if (r.task, r.metric) == ("piqa", "acc"))
    assert (row.n, row.value_a, row.value_b) == (6, pytest.approx(sum(acc_a) / 6), pytest.approx(sum(acc_b) / 6))
    better_a, better_b = sum(x > y for x, y in zip(acc_a, acc_b)), sum(y > x for x, y in zip(acc_a, acc_b))
    assert (row.only_a, row.only_b) == (better_a, better_b)
    assert ("piqa: compared on the 6 documents both runs scored (A 6, B 12: nested subsets); the A and B columns are "
            "those documents' values, not each run's own result") in out.paired[0].notes
    with pytest.raises(EvalkitError, match="6 in common"):  # evalkit check compares the same documents only
        paired_table(json.loads(Path(pilot).read_text(encoding="utf-8")), json.loads(Path(b).read_text("utf-8")),
                     ("A", "B"), (str(pilot), str(b)), iters=10, nested=False)


def test_compare_figure_is_a_png_linked_from_the_report(two_runs, tmp_path, capsys):
    a, b = two_runs
    report = tmp_path / "cli" / "ab.md"
    assert main(["compare", str(a), str(b), "--output", str(report), "--bootstrap-iters", "200"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {report}" in printed and f"figure: {report.with_suffix('.png')}" in printed
    assert "piqa             acc" in printed
    assert_valid_png(report.with_suffix(".png"))
    assert "![Paired differences B − A per task with 95% intervals](ab.png)" in report.read_text(encoding="utf-8")


def test_run_report_has_its_figure(two_runs):
    a, _ = two_runs
    report = a.parent.parent.parent / "reports" / f"{a.parent.name}-{a.stem}.md"  # the model's name, then the time
    assert_valid_png(report.with_suffix(".png"))
    text = report.read_text(encoding="utf-8")
    assert f"![Accuracy per task with 95% intervals]({a.parent.name}-{a.stem}.png)" in text


def test_figure_panels_hold_runs_and_published_rows(two_runs):
    from evalkit.reports.report import figure_panels

    a, _ = two_runs
    panels = figure_panels([load_results(a)], ["mine"])
    assert [p.title for p in panels] == ["PIQA (acc)", "ARC (Challenge) (acc)", "OpenAI's LAMBADA (acc)"]
    piqa = panels[0]
    published = sum(len([r for r in t["rows"] if "piqa" in r["values"]]) for t in reference_tables())
    assert len(piqa.points) == published + 1
    mine = next(p for p in piqa.points if p.measured)
    assert mine.label == "mine"
    assert [p.value for p in piqa.points] == sorted(p.value for p in piqa.points)
    neox = next(p for p in piqa.points if p.label == "GPT-NeoX-20B")
    assert (neox.low, neox.high) == wilson_interval(0.779, 1838)


def test_figure_of_one_point_with_a_long_label_lays_out(tmp_path):
    import warnings

    from evalkit.reports.figure import IntervalPoint, Panel, draw_intervals

    point = IntervalPoint("/a/long/local/model/folder/" * 4 + "model (float32)", 0.5, 0.3, 0.7, measured=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns when the axes collapse to nothing
        path = draw_intervals([Panel("PIQA (acc)", "acc", (point,))], tmp_path / "one.png", "title")
    assert_valid_png(path)


def test_compare_says_when_b_is_a_copy_of_a(two_runs, tmp_path, capsys):
    a, _ = two_runs
    copy = tmp_path / "copy.json"
    copy.write_bytes(Path(a).read_bytes())
    assert main(["compare", str(a), str(copy), "--output", str(tmp_path / "c.md"), "--bootstrap-iters", "50",
                 "--no-references"]) == 0
    assert f"  note: A and B hold the same run ({copy} is a copy of {a})" in capsys.readouterr().out


def test_rows_without_a_test_show_a_dash(two_runs, tmp_path):
    a, b = two_runs
    out = compare([str(a), str(b)], tmp_path / "dash.md", iters=100)
    text = out.report_path.read_text(encoding="utf-8")
    # pythia-70m's published perplexity has no stderr: no z-test, so no verdict either
    row = next(line for line in text.splitlines() if line.startswith("| pythia-70m | lambada_openai | perplexity |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[7:11] == ["—", "—", "—", "—"]  # z, p, p (Holm), significant


def test_the_figure_shows_paired_differences(two_runs, tmp_path):
    from evalkit.reports.compare import delta_panels

    a, b = two_runs
    out = compare([str(a), str(b)], tmp_path / "d.md", iters=200, with_references=False)
    panels = delta_panels(out.paired)
    assert [p.unit for p in panels] == ["accuracy", "perplexity"]
    rows = {(r.task, r.metric): r for r in out.paired[0].rows}
    accuracy = {p.label: p for p in panels[0].points}
    assert sorted(accuracy) == sorted(f"{t} {m}" for t, m in rows if m != "perplexity")
    piqa = accuracy["piqa acc"]
    assert (piqa.delta, piqa.low, piqa.high, piqa.significant) == (
        rows["piqa", "acc"].delta, rows["piqa", "acc"].low, rows["piqa", "acc"].high, rows["piqa", "acc"].significant)
    assert [p.label for p in panels[1].points] == ["lambada_openai perplexity"]
    assert_valid_png(out.figure_path)
