"""The front door and the docs: the README starts with its two commands and stays short; code
and help texts hold reasons, not measurements (numbers with dates and machines live in
bench/RESULTS.md, bench/log/ and docs/); every module the docs describe exists and every module
is described."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = sorted((ROOT / "nmt").rglob("*.py")) + [ROOT / "cli.py"]

# a date, a clock time, or a machine a measurement was taken on
# (a dated log's file name is a stable link, not a measurement)
MEASURED = re.compile(r"(?<!log/)\b20\d\d-[01]\d-[0-3]\d\b|\b[0-2]\d:[0-5]\d UTC\b"
                      r"|\b(H100|H200|A100|Zen ?4|Xeon|EPYC)\b")


def test_readme_starts_with_the_two_commands_and_stays_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; detail belongs in docs/"
    block = lines[lines.index("```bash") + 1:][:2]
    assert block[0].startswith("make install compare") and block[1].startswith("make test")
    assert lines.index("```bash") < 5


def test_no_dates_clock_times_or_machines_in_code_comments_or_help():
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
             for p in CODE for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if MEASURED.search(line)]
    assert not found, "measurements belong in bench/RESULTS.md or docs/, not in code:\n" + \
        "\n".join(found)


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README.md links to {target}, which is missing"
