"""pcpipe's exceptions, in one place, each with the exit status `pcpipe` gives it (cli.main).

Every class also keeps the built-in base it had before it moved here (ValueError, RuntimeError, FileNotFoundError
...), so that callers' `except ValueError` and the like still catch it. exit_code follows what the CLI did for that
base: 2 the user's input, options or configuration; 3 an internal or publishing failure (cli.main writes the trace
to a file); 4 busy. Nothing heavy is imported here: every layer may import this module."""
from __future__ import annotations

import os


class PcpipeError(Exception):
    """Base of pcpipe's own exceptions; `exit_code` is the status of `pcpipe` when one ends a command."""

    exit_code = 3


# ------------------------------------------------------------------------------- the user's input (exit 2)
class UserError(PcpipeError, ValueError):
    """Input, options or settings the user can correct; a ValueError, as the stages raised before."""

    exit_code = 2


class ConfigError(UserError):
    """A configuration file that cannot be used; the message (one line) names the file and the key."""


class OptionError(UserError):
    """A command-line option or setting that cannot work, found before any input is read (the CLI exits 2)."""


class SettingsError(UserError):
    """Tile settings that differ from those the run directory was tiled with, or that the sheet grid cannot hold."""


class AllQuarantined(UserError):
    """Every input of a layer stage was refused and no earlier run left a sheet: nothing to analyse. Carries the
    tile summary, so that the caller can print the quarantine lines (the CLI exits with status 2)."""

    def __init__(self, source: str, summary: dict):
        self.source, self.summary = source, summary
        self.refused = [r for r in summary.get("results", [])
                        if r["status"] in ("quarantined", "duplicate")
                        or (r["status"] == "unchanged" and r.get("was") in ("quarantined", "duplicate"))]
        n = len(summary.get("results", []))
        super().__init__(f"every {source} input was quarantined ({len(self.refused)} of {n} file(s)), no sheet to "
                         f"analyse; tile summary: {summary.get('summary_path')}")

    def lines(self) -> list[str]:
        """One line per refused input: its status, code and reason (the reason names the file)."""
        out = []
        for r in self.refused:
            reason = r.get("reason") or f"{r.get('input')}: quarantined by an earlier run"
            earlier = " (in an earlier run)" if r["status"] == "unchanged" else ""
            out.append(f"  {'DUPLICATE' if 'duplicate' in (r['status'], r.get('was')) else 'QUARANTINED'}{earlier} "
                       f"[{r.get('code') or r.get('was')}] {reason}")
        return out


class DiveError(UserError):
    """A dive-survey file that cannot be used; the message names the file and what is wrong in it."""


class DeerInputError(UserError):
    """A deer-layer input that cannot be used; the message names the file and the problem."""


class PdalUnavailable(UserError):
    """PDAL was asked for and is not installed here."""


class SheetError(UserError):
    """A map-sheet code or level that is not one of the 国土基本図 grid."""


class Tiles3DError(UserError):
    """A sheet that cannot be converted; the message names the file and what to do."""


class VendorMissing(PcpipeError, FileNotFoundError):
    """The preview page's JS libraries are not installed."""

    exit_code = 2


# ------------------------------------------------------------- one input file's defects (quarantined, not exits)
# The stages catch these per file and quarantine the file; one reaching the CLI escaped that, so cli.main reports
# it as an internal error (exit 3), as it always has.
class InputError(PcpipeError):
    """A defect of one input file. The message names the file and what is wrong with it, in our words; `detail`
    may keep a library's own text for a log, never for the reason shown."""

    def __init__(self, path, code: str, message: str, detail: str | None = None):
        self.path, self.code, self.detail = str(path), code, detail
        super().__init__(f"{os.path.basename(str(path))}: {message}")


class CapExceeded(InputError):
    """A reader stopped at its wall-time or memory cap (core/guard.py)."""


class CRSError(PcpipeError):
    """A CRS problem with one input: missing, contradictory, or not transformable. Message says what to do."""


class HeightError(CRSError):
    """A height transformation that would silently leave z unchanged (PROJ 'ballpark') or cannot be done."""


# ------------------------------------------------------------------------------- publishing (exit 3)
class PublishError(PcpipeError, RuntimeError):
    """A dataset could not be published; the catalog was put back as it was before (see the report)."""


class HostileAnswer(PublishError):
    """CKAN answered something pcpipe will not build on (an id that is not one, a field of the wrong type)."""


class ServerError(PcpipeError, RuntimeError):
    """An HTTP 5xx answer: worth retrying. Its text has the token taken out before it is shortened."""

    def __init__(self, status: int, text: str, secret: str | None = None):
        from ..publish.ckan import clip  # lazily: ckan imports ckanapi; only ckan raises this

        super().__init__(f"HTTP {status}: {clip(text, secret, 300)}")
        self.status = status


class PushError(PcpipeError, RuntimeError):
    """A STAC API push that failed (rerunning it completes it: every object is an upsert)."""


# ------------------------------------------------------------------------------------------- busy (exit 4)
class LockHeld(PcpipeError, RuntimeError):
    """Another run holds the run directory (cron: try again later)."""

    exit_code = 4
