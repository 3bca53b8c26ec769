"""The README and the documentation site as a user meets them: the README stays a short guide,
the site builds with no broken link or orphan page, and every Python and shell block either runs
as written or says on the line right before it why it does not (`<!-- not run: REASON -->`).

The runnable blocks of one page run in order in one scratch directory, as a reader would type
them, so a walkthrough's later steps find the files its earlier steps wrote."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: steerable, mkdocs, python
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = {"python": "python", "bash": "shell", "sh": "shell", "console": "shell"}
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"^<!-- not run: (.*\S) -->$")
BLOCK_TIMEOUT = 300  # seconds; the slowest block (a tiny training plus two evaluations) takes ~40


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    kind: str  # "python" or "shell"
    code: str
    not_run: str | None  # the reason, when the block is marked as not run

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    """The Python and shell blocks of `page`, each with the not-run reason on the line before it."""
    text = page.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        language = match.group(1).lower()
        if language not in RUNNABLE:
            continue
        line = text.count("\n", 0, match.start()) + 1
        before = text.splitlines()[line - 2].strip() if line >= 2 else ""
        marked = NOT_RUN.match(before)
        code = match.group(2)
        if language == "console":  # the commands are the lines after a `$ ` prompt
            code = "\n".join(ln[2:] for ln in code.splitlines() if ln.startswith("$ ")) + "\n"
        blocks.append(Block(page, line, RUNNABLE[language], code, marked.group(1) if marked else None))
    return blocks


def run_block(block: Block, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        # the page's own trust store and measured rates, not the user's (the model cache is shared)
        "STEERABLE_HOME": str(cwd / ".steerable-home"),
    }
    if block.kind == "python":
        command = [str(BIN / "python"), "-c", block.code]
    else:
        command = ["bash", "-e", "-c", block.code]
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT, check=False
    )


def stop_servers(cwd: Path) -> None:
    """A page that starts a server in the background writes its pid to server.pid and stops it in
    its last block; if a block failed before that, stop it here."""
    pid_file = cwd / "server.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


def test_the_readme_is_a_short_guide():
    size = (ROOT / "README.md").stat().st_size
    assert size <= 15 * 1024, f"README.md is {size} bytes; reference material belongs in docs/"


def test_the_readmes_links_lead_to_files_of_the_repository():
    """The README is read on its own (outside the site): its relative links must resolve."""
    links = re.findall(r"\]\(([^)#\s]+)[^)]*\)", (ROOT / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert local, "the README links to no documentation page"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_the_site_builds_strictly(tmp_path):
    """No broken link or anchor, no page left out of the nav (mkdocs.yml turns those into
    warnings, and --strict makes a warning fail the build)."""
    result = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()
    for page in (ROOT / "docs").rglob("*.md"):
        built = tmp_path / "site" / page.relative_to(ROOT / "docs").with_suffix("") / "index.html"
        if page.name == "index.md":
            built = tmp_path / "site" / page.relative_to(ROOT / "docs").parent / "index.html"
        assert built.exists(), f"{page} was not built"


def test_a_block_is_marked_only_by_a_reason_on_the_line_right_before_it(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not run: needs a GPU -->\n```bash\nnvidia-smi\n```\n\n"
        "<!-- not run:  -->\n```python\nprint(1)\n```\n\n"
        "<!-- not run: too far away -->\n\n```sh\ntrue\n```\n"
        "```yaml\nkey: value\n```\n"
        "```console\n$ echo hi\nhi\n```\n"
    )
    blocks = code_blocks(page)
    assert [(b.kind, b.not_run) for b in blocks] == [
        ("shell", "needs a GPU"),
        ("python", None),  # an empty reason is no reason
        ("shell", None),  # a blank line between: not marked
        ("shell", None),
    ]
    assert blocks[3].code == "echo hi\n"


def test_enough_blocks_run_that_marking_cannot_hide_them():
    runnable = [b for page in PAGES for b in code_blocks(page) if b.not_run is None]
    assert len(runnable) >= 5, [b.where() for b in runnable]
    assert any(b.page.name == "README.md" for b in runnable)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_unmarked_block_runs_as_written(page, tmp_path):
    blocks = [b for b in code_blocks(page) if b.not_run is None]
    try:
        for block in blocks:
            result = run_block(block, tmp_path)
            assert result.returncode == 0, (
                f"{block.where()} ({block.kind}) exited {result.returncode}; mark it "
                f"`<!-- not run: REASON -->` if it cannot run\n{block.code}\n"
                f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
            )
    finally:
        stop_servers(tmp_path)
