"""Live progress of a ninja build: one task per running translation unit, done/total with elapsed time and
ETA, the full output in a log file, and a heartbeat naming the running TUs when nothing finishes for a
while (a long nvcc compile must never look like a hang).

Ninja prints its status line (``NINJA_STATUS``, set to a marker by the caller) when an edge *finishes*
and nothing when one starts, so each compile command first touches ``<object>.start``; polling those
files tells what is running and since when.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from rich.console import RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from buildtool.compile.procgroup import spawn_guarded
from buildtool.console import err

STATUS_MARK = "@@buildtool "


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _OverallOnly(ProgressColumn):
    """A column shown for the overall task only; running-TU rows show just their name and elapsed time."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__()
        self.column = column

    def render(self, task: Task) -> RenderableType:
        return Text("") if task.fields.get("unit") else self.column.render(task)


class NinjaProgress:
    """Runs ninja and reports progress. ``units`` maps each object path ninja will build to its label."""

    def __init__(self, units: Mapping[str, str], log: IO[str], *, quiet: bool = False, title: str = "",
                 heartbeat_s: float | None = None, poll_s: float = 0.5) -> None:
        self.units = dict(units)
        self.by_label = {label: obj for obj, label in self.units.items()}
        self.log = log
        self.quiet = quiet
        self.title = title or "compile"
        self.live = err.is_terminal and not quiet
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else (180.0 if self.live else 60.0)
        self.poll_s = poll_s
        self.running: dict[str, float] = {}  # object path -> start time (epoch)
        self.finished: dict[str, float] = {}
        self.failed: list[str] = []
        self._output: deque[str] = deque(maxlen=4000)
        self._failure_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()

    # ------------------------------------------------------------------ ninja output
    def _reader(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _handle(self, line: str, now: float) -> str | None:
        """Log the line; return the label of a finished edge, if the line says one finished."""
        self.log.write(line + "\n")
        if line.startswith(STATUS_MARK):
            _, _, label = line[len(STATUS_MARK):].partition("| ")
            return label.strip()
        if line.startswith("FAILED: "):
            self.failed.append(line[len("FAILED: "):].strip())
            self._failure_lines.append(line)
        elif self.failed and len(self._failure_lines) < 400:
            self._failure_lines.append(line)
        self._output.append(line)
        return None

    def error_excerpt(self, limit: int) -> list[str]:
        """The first lines of the first failure, compiler errors first."""
        lines = [ln for ln in self._failure_lines if not ln.startswith(("FAILED: ", ": > ", "ninja: "))]
        errors = [ln for ln in lines if " error" in ln or "error:" in ln]
        picked = errors or lines
        return picked[:limit]

    # ------------------------------------------------------------------ running
    def run(self, argv: Sequence[str], env: Mapping[str, str]) -> int:
        for obj in self.units:  # stale markers from an earlier run would show TUs as running
            with contextlib.suppress(FileNotFoundError):
                os.remove(obj + ".start")
        # ninja and its compilers: one process group that dies with buildtool, SIGKILL included
        guarded = spawn_guarded(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", bufsize=1)
        proc = guarded.proc
        assert proc.stdout is not None
        reader = threading.Thread(target=self._reader, args=(proc.stdout,), daemon=True)
        reader.start()
        try:
            if self.live:
                self._loop_live(proc)
            else:
                self._loop_plain(proc)
        except BaseException:
            guarded.terminate()
            raise
        code = proc.wait()
        guarded.finish()
        reader.join(timeout=5)
        self.log.write(f"# ninja exited with {code}\n")
        self.log.flush()
        return code

    def _drain(self, now: float) -> tuple[list[str], bool]:
        done: list[str] = []
        ended = False
        deadline = time.monotonic() + self.poll_s
        while True:
            timeout = max(0.0, deadline - time.monotonic())
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                break
            if line is None:
                ended = True
                break
            label = self._handle(line, now)
            if label is not None:
                done.append(label)
        self.log.flush()
        return done, ended

    def _scan_started(self) -> list[str]:
        new = []
        for obj in self.units:
            if obj in self.running or obj in self.finished:
                continue
            try:
                started = os.stat(obj + ".start").st_mtime
            except FileNotFoundError:
                continue
            self.running[obj] = started
            new.append(obj)
        return new

    def _finish(self, label: str) -> tuple[str, float] | None:
        obj = self.by_label.get(label)
        if obj is None:
            return None
        start = self.running.pop(obj, None)
        if start is None:
            with contextlib.suppress(FileNotFoundError):
                start = os.stat(obj + ".start").st_mtime
        seconds = max(0.0, time.time() - start) if start else 0.0
        self.finished[obj] = seconds
        return obj, seconds

    def _running_text(self) -> str:
        now = time.time()
        items = sorted(self.running.items(), key=lambda kv: kv[1])
        return ", ".join(f"{self.units[o]} ({format_seconds(now - t)})" for o, t in items) or "(linking)"

    def _heartbeat_due(self, last_event: float) -> bool:
        return time.monotonic() - last_event >= self.heartbeat_s

    def _loop_plain(self, proc: subprocess.Popen[str]) -> None:
        total = len(self.units)
        started_at = time.monotonic()
        last_event = started_at
        if not self.quiet:
            err.print(f"{self.title}: compiling {total} translation unit(s)")
        while True:
            done, ended = self._drain(time.time())
            self._scan_started()
            for label in done:
                info = self._finish(label)
                last_event = time.monotonic()
                if not self.quiet:
                    what = f"{label} ({format_seconds(info[1])})" if info else label
                    err.print(f"[{len(self.finished)}/{total}] {what}", highlight=False)
            if self._heartbeat_due(last_event) and proc.poll() is None:
                message = (f"still compiling after {format_seconds(time.monotonic() - started_at)} "
                           f"[{len(self.finished)}/{total} done]: {self._running_text()}")
                self.log.write("# " + message + "\n")
                err.print(message, highlight=False)
                last_event = time.monotonic()
            if ended:
                return

    def _loop_live(self, proc: subprocess.Popen[str]) -> None:
        total = len(self.units)
        columns = (SpinnerColumn(), TextColumn("{task.description}"), _OverallOnly(BarColumn()),
                   _OverallOnly(MofNCompleteColumn()), TimeElapsedColumn(), _OverallOnly(TextColumn("ETA")),
                   _OverallOnly(TimeRemainingColumn()))
        with Progress(*columns, console=err, transient=False) as bar:
            overall = bar.add_task(f"[bold]{self.title}", total=total or 1)
            tasks: dict[str, TaskID] = {}
            last_event = time.monotonic()
            while True:
                done, ended = self._drain(time.time())
                for obj in self._scan_started():
                    tasks[obj] = bar.add_task(f"  {self.units[obj]}", total=None, unit=True)
                for label in done:
                    info = self._finish(label)
                    last_event = time.monotonic()
                    if info is None:
                        continue
                    obj, seconds = info
                    task = tasks.pop(obj, None)
                    if task is not None:
                        bar.remove_task(task)
                    bar.advance(overall)
                    bar.console.print(f"  [green]✓[/] {label} [dim]{format_seconds(seconds)}[/]", highlight=False)
                    if len(self.finished) == total:
                        bar.update(overall, description=f"[bold]{self.title}[/]: linking")
                if self._heartbeat_due(last_event) and proc.poll() is None:
                    message = f"still compiling: {self._running_text()}"
                    self.log.write("# " + message + "\n")
                    bar.console.print(f"  [yellow]{message}[/]", highlight=False)
                    last_event = time.monotonic()
                if ended:
                    for task in tasks.values():
                        bar.remove_task(task)
                    return


def marker_path(obj: Path | str) -> str:
    return str(obj) + ".start"
