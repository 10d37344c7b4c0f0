"""Check reports: named checks that pass, fail with a readable reason, or did not run.

Every ``check_*`` function of ``circuitlab.testing`` runs its checks through a ``Checks`` and returns
the ``CheckReport``; with ``raise_on_failure`` (the default) a failed check raises
``PluginCheckError``, an ``AssertionError`` whose message lists each failed check and why, so a
pytest failure reads like the ``circuitlab plugins --check`` table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from ..errors import CircuitlabError
from ..interrupts import STOPS
from ..plugins import KIND_LABELS, Entry
from ..plugins.calls import what_happened


class CheckFailed(Exception):
    """Raised inside a check with the readable reason it failed."""


class PluginCheckError(AssertionError):
    """A plugin failed one or more contract checks; the message lists them."""

    def __init__(self, report: CheckReport):
        self.report = report
        super().__init__(report.failure_message())


@attrs.frozen(kw_only=True)
class CheckResult:
    check: str
    status: str  # "pass", "FAIL" or "not run"
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "detail": self.detail}


@attrs.define
class CheckReport:
    kind: str
    name: str
    plugin: str
    results: list[CheckResult] = attrs.Factory(list)

    @property
    def passed(self) -> bool:
        return all(r.status == "pass" for r in self.results)

    @property
    def title(self) -> str:
        return f"{KIND_LABELS[self.kind]} {self.name!r} ({self.plugin})"

    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "FAIL"]

    def table(self) -> str:
        width = max([len(r.check) for r in self.results] + [5])
        lines = [self.title]
        for r in self.results:
            lines.append(f"  {r.status:<7}  {r.check:<{width}}  {r.detail}".rstrip())
        verdict = "passed" if self.passed else f"FAILED ({len(self.failures())} of {len(self.results)} checks)"
        lines.append(f"  => {verdict}")
        return "\n".join(lines)

    def failure_message(self) -> str:
        failed = self.failures()
        lines = [f"{self.title} failed {len(failed)} of {len(self.results)} contract checks:"]
        lines += [f"  - {r.check}: {r.detail}" for r in failed]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "plugin": self.plugin, "passed": self.passed,
                "checks": [r.to_json() for r in self.results]}


def entry_for(kind: str, factory: Any, name: str | None = None, entry: Entry | None = None) -> Entry:
    """The registry entry to check: the given one, or a stand-in for a bare factory (kit use)."""
    if entry is not None:
        return entry
    name = name or getattr(factory, "__name__", type(factory).__name__)
    return Entry(kind=kind, name=name, factory=factory, summary="", plugin="under test", dist="(test)", version="")


class Checks:
    """Runs named checks in order; a check whose prerequisite did not pass is reported as not run."""

    def __init__(self, entry: Entry):
        self.entry = entry
        self.report = CheckReport(kind=entry.kind, name=entry.name, plugin=entry.plugin)

    def status(self, check: str) -> str | None:
        return next((r.status for r in self.report.results if r.check == check), None)

    def run(self, check: str, fn: Callable[[], Any], needs: tuple[str, ...] = ()) -> Any:
        """Run ``fn``; its return value (a string) becomes the detail of a passing check."""
        missing = [n for n in needs if self.status(n) != "pass"]
        if missing:
            self.report.results.append(CheckResult(check=check, status="not run",
                                                   detail=f"needs {', '.join(repr(m) for m in missing)}"))
            return None
        try:
            value = fn()
        except (CheckFailed, CircuitlabError) as exc:
            self.report.results.append(CheckResult(check=check, status="FAIL", detail=self._short(str(exc))))
            return None
        except STOPS:
            raise
        except BaseException as exc:  # the plugin raised (or sys.exit()ed) past the wrappers: a failed check
            self.report.results.append(CheckResult(check=check, status="FAIL", detail=what_happened(exc)))
            return None
        detail = value if isinstance(value, str) else ""
        self.report.results.append(CheckResult(check=check, status="pass", detail=detail))
        return value

    def _short(self, message: str) -> str:
        prefix = f"{self.entry.label}: "  # the table already names the plugin
        return message[len(prefix):] if message.startswith(prefix) else message

    def finish(self, raise_on_failure: bool) -> CheckReport:
        if raise_on_failure and not self.report.passed:
            raise PluginCheckError(self.report)
        return self.report
