"""Every shell command of the README and of docs/ runs, so that they cannot drift from the code.

The convention (docs/index.md says it too): commands live in fenced ``bash`` blocks, one per line
(``\\`` continues a line); a command that cannot run here in seconds (downloads, a GPU, several
machines, a W&B account, minutes of CPU) ends with ``# needs: <what>`` and is listed, not run. A
block may name a run folder with ``RUN=$(ls -td logs/train/runs/*/ | head -1)``.

The pages share one working directory (with ``scripts/``, ``examples/``, ``benchmarks/`` linked in)
and run their commands in order, so a later command may use the files of an earlier one. A command
that already ran (the same text, after ``$RUN`` is filled in) is not run again: its run folder is
marked newest instead, as if it had. ``lit-dl`` commands run in this process, made tiny: one short
epoch (training verbs), two trials (tune), two folds (cv); everything else runs in bash.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lit_dl.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED = ("scripts", "examples", "benchmarks", "configs")

# Appended to the commands of each verb (the last value of a key wins; ++ adds or replaces).
TINY_TRAINING = [
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=3",
    "++trainer.limit_val_batches=2",
    "++trainer.limit_test_batches=2",
]
TINY = {
    "train": TINY_TRAINING,
    "tune": [*TINY_TRAINING, "tune.n_trials=2"],
    "cv": [*TINY_TRAINING, "cv.folds=2"],
}
# LIT_DL_DOCS_TIMES=FILE: append each command's seconds to FILE.
TIMES = "LIT_DL_DOCS_TIMES"
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=\$\((.*)\)$")


def commands(page: Path) -> list[tuple[str, str | None]]:
    """``(command, needs)`` of every ``bash`` block of a page, in order; ``needs`` is the text of a
    trailing ``# needs:`` comment (the command is then not run) or None."""
    found: list[tuple[str, str | None]] = []
    blocks = re.findall(r"^```bash\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for raw in joined.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            needs = None
            if "# needs:" in line:
                line, _, needs = line.partition("# needs:")
                line, needs = line.strip(), needs.strip()
            elif " # " in line:  # a comment after the command
                line = line.split(" # ")[0].strip()
            found.append((line, needs))
    return found


def _substitute(command: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        command = command.replace("${" + name + "}", value).replace("$" + name, value)
    return command


class Workspace:
    """The shared working directory, the shell variables set so far and the commands already run
    (command -> the run folders it made)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.variables: dict[str, str] = {}
        self.done: dict[str, list[Path]] = {}

    def run_folders(self) -> set[Path]:
        return set(self.path.glob("logs/*/runs/*/"))

    def run(self, command: str) -> None:
        command = _substitute(command, self.variables)
        if command in self.done:
            for folder in self.done[command]:  # as if it had run again: its folder is the newest
                os.utime(folder)
            return
        before = self.run_folders()
        start = time.perf_counter()
        _run(command, self.path, self.variables)
        if log := os.environ.get(TIMES):  # where the suite's time goes, command by command
            with open(log, "a", encoding="utf-8") as out:
                out.write(f"{time.perf_counter() - start:7.1f}\t{command}\n")
        if not ASSIGNMENT.match(command):
            self.done[command] = sorted(self.run_folders() - before)


def _run(command: str, cwd: Path, variables: dict[str, str]) -> None:
    if match := ASSIGNMENT.match(command):
        result = subprocess.run(["bash", "-c", match[2]], cwd=cwd, capture_output=True, text=True)
        value = result.stdout.strip().rstrip("/")
        assert result.returncode == 0 and value, f"{command!r} gave nothing: {result.stderr}"
        variables[match[1]] = value
        return
    words = shlex.split(command)
    environment = {}
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # VAR=value lit-dl ...
        name, _, value = words.pop(0).partition("=")
        environment[name] = value
    if words[0] == "lit-dl":
        verb = words[1] if len(words) > 1 else ""
        extra = [] if any(w.startswith("-") for w in words[2:]) else TINY.get(verb, [])
        saved_path, saved_env = list(sys.path), dict(os.environ)
        # PYTHONPATH=dir: what a new process would import from, here added to this one's path.
        sys.path[:0] = [str(cwd / d) for d in environment.pop("PYTHONPATH", "").split(os.pathsep) if d]
        os.environ.update(environment)
        try:
            main([*words[1:], *extra])
        except SystemExit as stop:
            assert stop.code in (0, None), f"{command!r} exited with {stop.code}"
        finally:
            sys.path[:] = saved_path
            os.environ.clear()
            os.environ.update(saved_env)
        return
    if words[0] == "python":
        words[0] = sys.executable
        command = shlex.join(words)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, **environment}
    result = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{command!r} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"


def _pages_with_commands() -> list[Path]:
    return [page for page in PAGES if commands(page)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    path = tmp_path_factory.mktemp("docs")
    for name in LINKED:
        (path / name).symlink_to(ROOT / name, target_is_directory=True)
    return Workspace(path)


@pytest.mark.parametrize("page", _pages_with_commands(), ids=lambda p: p.name)
def test_every_command_of_the_page_runs(
    page: Path, workspace: Workspace, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    monkeypatch.chdir(workspace.path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for command, needs in commands(page):
        if needs is not None:
            assert needs, f"{page.name}: '# needs:' without saying what, after {command!r}"
            continue
        workspace.run(command)


def test_commands_are_found_and_needs_are_named() -> None:
    found = {page.name: commands(page) for page in PAGES}
    assert len(found["README.md"]) >= 5  # the README shows the common commands
    runnable = [c for page in found.values() for c, needs in page if needs is None]
    assert any(c.startswith("lit-dl train") for c in runnable)
    for page, entries in found.items():
        for command, needs in entries:
            assert needs is None or needs.strip(), (page, command)


def test_site_builds_strict(tmp_path: Path) -> None:
    """Every page in the nav, no broken link or anchor (``pip install -e '.[docs]'``; skips without)."""
    pytest.importorskip("mkdocs")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
