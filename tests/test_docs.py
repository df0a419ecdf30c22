"""The README and docs/ stay true: every relative link reaches a file (and, with #anchor, a heading
of it), and docs/cli.md lists exactly the flags of each command's argparse parser."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lowercase, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link keeps its text
    text = text.replace("`", "").replace("*", "").lower().strip()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for line in prose_lines(text):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def links(text: str) -> list[str]:
    found = []
    for line in prose_lines(text):
        line = CODE_SPAN.sub("", line)
        found.extend(m.group(1) for m in LINK.finditer(line))
    return found


def broken_links(path: Path) -> list[str]:
    """'target: why' for every relative link of the file that leads nowhere."""
    problems = []
    for target in links(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no file {dest}")
            continue
        if anchor:
            if dest.is_dir() or dest.suffix.lower() != ".md":
                problems.append(f"{target}: an anchor into a file that is not markdown")
            elif anchor not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def command_sections(text: str) -> dict[str, str]:
    """`## name` (one word) -> the section's prose up to the next `## ` heading."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in prose_lines(text):
        match = HEADING.match(line)
        if match and len(match.group(1)) <= 2:
            title = match.group(2).replace("`", "").strip()
            current = title if len(match.group(1)) == 2 and re.fullmatch(r"[a-z][a-z-]*", title) else None
            if current is not None:
                sections[current] = []
            continue
        if current is not None:
            sections[current].append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def documented_flags(section: str) -> set[str]:
    """Flags written in code spans of the section (`--flag`, or inside a command line)."""
    flags = set()
    for match in CODE_SPAN.finditer(section):
        flags.update(FLAG.findall(match.group(2)))
    return flags


def parser_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions if not isinstance(action, argparse._HelpAction)
            for option in action.option_strings if option.startswith("--")}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def cli_mismatches(doc_text: str, commands: dict[str, argparse.ArgumentParser]) -> list[str]:
    sections = command_sections(doc_text)
    problems = [f"## {name}: no such command" for name in sections if name not in commands]
    for name, parser in commands.items():
        if name not in sections:
            problems.append(f"## {name}: missing")
            continue
        documented, real = documented_flags(sections[name]), parser_flags(parser)
        problems += [f"## {name}: {flag} is not documented" for flag in sorted(real - documented)]
        problems += [f"## {name}: {flag} does not exist" for flag in sorted(documented - real)]
    return problems


# ---------------------------------------------------------------- the checks on the real files

@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_reach_files_and_headings(path):
    assert broken_links(path) == []


def test_cli_doc_matches_the_parsers():
    from engine.cli import build_parser

    commands = subcommands(build_parser())
    assert len(commands) >= 11
    assert cli_mismatches((ROOT / "docs" / "cli.md").read_text(encoding="utf-8"), commands) == []


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= README_MAX_LINES


# ---------------------------------------------------------------- the checker catches what it should

def test_slugs_follow_github():
    assert slug("The default search: guided by the gradient") == "the-default-search-guided-by-the-gradient"
    assert slug("Sweeps on a Ray cluster (`sweep --backend ray`)") == "sweeps-on-a-ray-cluster-sweep---backend-ray"
    assert slug("Evaluation speed (`bench`)") == "evaluation-speed-bench"
    assert anchors("# A\n## A\n```\n# B\n```\n") == {"a", "a-1"}


def test_broken_links_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# Present heading\n", encoding="utf-8")
    (tmp_path / "pic.png").write_bytes(b"")
    doc = tmp_path / "doc.md"
    doc.write_text("# Top\n[ok](other.md#present-heading) ![p](pic.png) [self](#top) [web](https://x.org/y)\n"
                   "`[not a link](gone.md)`\n```\n[in code](gone.md)\n```\n"
                   "[a](missing.md) [b](other.md#absent) [c](#nowhere) ![d](gone.png)\n", encoding="utf-8")
    problems = broken_links(doc)
    assert [p.split(":")[0] for p in problems] == ["missing.md", "other.md#absent", "#nowhere", "gone.png"]


def test_flag_mismatches_are_found():
    root = argparse.ArgumentParser()
    sub = root.add_subparsers()
    one = sub.add_parser("one")
    one.add_argument("--alpha")
    one.add_argument("--beta", "-b")
    one.add_argument("--no-check", "--check", dest="check")
    sub.add_parser("two-words").add_argument("--gamma")
    commands = subcommands(root)
    good = ("## Shared flags\n`--anything` here is not checked\n## one\n- `--alpha`\n- `--beta`, `--check` / "
            "`--no-check`\n## two-words\n`python -m x two-words --gamma 3`\n")
    assert cli_mismatches(good, commands) == []
    bad = "## one\n- `--alpha`\n- `--delta`\n- `--check`, `--no-check`\n## three\n"
    assert cli_mismatches(bad, commands) == ["## three: no such command", "## one: --beta is not documented",
                                             "## one: --delta does not exist", "## two-words: missing"]
