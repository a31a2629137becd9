"""The guides in docs/ run as written: every ```python block of a guide, in order, in one namespace.

Each guide runs in a fresh temporary working directory on the current Keras backend (the suite runs once
per backend). A block is left out only when the line just before its fence is an HTML comment
`<!-- not run -->` (for code that downloads or needs a big checkpoint; the guide says why beside it).
docs/serving.md (TF Serving, tested by tests/test_export.py) and docs/benchmarks.md (measurements) are not
run. Tracebacks point at the guide's own line numbers (`docs/training.md:42`).

Also checked here, cheaply: the README stays a front page, every guide is listed in the docs index and
linked from the README, relative links resolve, and the preset picture exists and is small.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOT_RUN = {"serving.md", "benchmarks.md"}  # serving: tests/test_export.py; benchmarks: numbers only
GUIDES = sorted(path.name for path in DOCS.glob("*.md") if path.name not in NOT_RUN | {"README.md"})
OWN_PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", DOCS / "README.md"] + [DOCS / g for g in GUIDES]
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP_MARK = re.compile(r"^<!--\s*not run\b.*-->\s*$")


def code_blocks(text):
    """`(language, first_line_number, code, skipped)` of each fenced block (line numbers from 1)."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match or not match.group(1):
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"unclosed code block at line {index + 1}")
        skipped = index > 0 and bool(SKIP_MARK.match(lines[index - 1].strip()))
        blocks.append((match.group(1), index + 2, "\n".join(lines[index + 1 : end]), skipped))
        index = end + 1
    return blocks


def python_blocks(guide):
    return [block for block in code_blocks((DOCS / guide).read_text()) if block[0] == "python"]


def test_code_blocks_are_found():
    text = "a\n```python\nx = 1\n```\n<!-- not run -->\n```python\ny = 2\n```\n```bash\nls\n```\n"
    assert code_blocks(text) == [
        ("python", 3, "x = 1", False),
        ("python", 7, "y = 2", True),
        ("bash", 10, "ls", False),
    ]


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_runs(guide, tmp_path, monkeypatch):
    blocks = [block for block in python_blocks(guide) if not block[3]]
    assert blocks, f"docs/{guide} has no runnable python block"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{guide[:-3].replace('-', '_')}"}
    for _, line, code, _ in blocks:
        # Padded so that a traceback names the guide's own line numbers.
        exec(compile("\n" * (line - 1) + code, str(DOCS / guide), "exec"), namespace)


def test_skipped_blocks_are_few_and_explained():
    for guide in GUIDES:
        text = (DOCS / guide).read_text()
        blocks = python_blocks(guide)
        skipped = [line for _, line, _, skip in blocks if skip]
        assert len(skipped) <= len(blocks) // 2, f"docs/{guide}: most python blocks are not run"
        lines = text.splitlines()
        for line in skipped:  # a visible reason in the five lines above the marker
            before = " ".join(lines[max(0, line - 8) : line - 3]).lower()
            assert any(word in before for word in ("download", "checkpoint", "gb", "not run")), (
                f"docs/{guide}:{line}: say why this block is not run"
            )


def test_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for guide in GUIDES + ["serving.md", "benchmarks.md", "README.md"]:
        assert f"docs/{guide}" in readme, f"README.md does not link docs/{guide}"
    assert "docs/images/presets.png" in readme


def test_docs_index_lists_every_page():
    index = (DOCS / "README.md").read_text()
    for page in GUIDES + ["serving.md", "benchmarks.md"]:
        assert f"({page})" in index, f"docs/README.md does not link {page}"


def test_relative_links_resolve():
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    for page in OWN_PAGES:
        for target in link.findall(page.read_text()):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links a missing {target}"


def test_preset_picture_is_small_and_its_command_is_documented():
    picture = DOCS / "images" / "presets.png"
    assert picture.is_file() and picture.stat().st_size < 200_000
    command = "KERAS_BACKEND=jax .venv/bin/python docs/make_preset_grid.py"
    assert command in (DOCS / "README.md").read_text()
    assert command in (DOCS / "make_preset_grid.py").read_text()
