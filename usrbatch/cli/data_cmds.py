"""`usr` dataset commands: init, import, attach, head, info, validate (namespaces:
namespace_cmds.py; the event log: events_cmds.py; `ls`: ls_cmds.py).

Each command parses its options, calls one library function in usrbatch.dataset and renders the
result. User mistakes surface as UsrError, which `run_cli` prints as `ERROR: ...` with exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path

import click

from usrbatch.cli.common import UsrContext, pass_usr, say
from usrbatch.dataset.catalog import dataset_info, validate_dataset
from usrbatch.dataset.event_append import require_complete_log
from usrbatch.dataset.overlay_write import attach
from usrbatch.dataset.preview import (
    WIDE_LIMIT,
    ellipsize,
    format_cell,
    head_dataset,
    render_table,
    table_rows,
)
from usrbatch.dataset.records import import_records, init_dataset
from usrbatch.dataset.ref import open_dataset
from usrbatch.dataset.registry_modes import DEFAULT_REGISTRY_MODE, REGISTRY_MODES
from usrbatch.errors import DatasetError, EventLogError, UsrError
from usrbatch.terminal import iec_size, printable


def _csv_list(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


# ---------------------------------------------------------------------------------------------
# init / import / attach


@click.command("init")
@click.argument("dataset")
@click.option("--source", default="", help="Where the data comes from.")
@click.option("--notes", default="", help="Free text for meta.md.")
@pass_usr
def init_cmd(usr: UsrContext, dataset: str, source: str, notes: str) -> None:
    """Create DATASET (flat `name` or `namespace/name`) under the root."""
    result = init_dataset(usr.root, dataset, source=source, notes=notes)
    if result.registry_created:
        say(
            f"Created {result.registry_path} with the reserved 'usr_state' namespace "
            "(register more with `usr namespace register`)."
        )
    say(f"Initialized dataset '{result.dataset.dataset_id}' at {result.dataset.dir}.")


@click.command("import")
@click.argument("dataset")
@click.option(
    "--from",
    "fmt",
    required=True,
    type=click.Choice(["csv", "parquet", "jsonl", "fasta"]),
    help="Input format.",
)
@click.option("--path", "path", required=True, type=click.Path(dir_okay=False), help="Input file.")
@click.option("--bio-type", default="dna", show_default=True, help="dna, rna or protein (default per row).")
@click.option(
    "--alphabet", default="dna_4", show_default=True, help="dna_4, dna_5, rna_4, ... (default per row)."
)
@click.option(
    "--source", default=None, help="Source label for every row (default: the file's source column)."
)
@click.option(
    "--skip-existing", is_flag=True, help="Skip sequences already in the dataset instead of failing."
)
@pass_usr
def import_cmd(
    usr: UsrContext,
    dataset: str,
    fmt: str,
    path: str,
    bio_type: str,
    alphabet: str,
    source: str | None,
    skip_existing: bool,
) -> None:
    """Append base records (sequences) to DATASET."""
    result = import_records(
        open_dataset(usr.root, dataset),
        path,
        fmt=fmt,
        bio_type=bio_type,
        alphabet=alphabet,
        source=source,
        skip_existing=skip_existing,
    )
    if result.dropped_columns:
        say(
            f"WARNING: {path}: dropped column(s) that are not base record columns: "
            f"{', '.join(result.dropped_columns)} (attach them as an overlay with `usr attach`)."
        )
    say(
        f"Imported {result.rows_written} row(s) into {result.dataset.dataset_id} "
        f"({result.rows_skipped} skipped) from {path}."
    )


@click.command("attach")
@click.argument("dataset")
@click.option(
    "--path", required=True, type=click.Path(dir_okay=False), help="csv, parquet, jsonl or json file."
)
@click.option("--namespace", required=True, help="Registered namespace of the columns.")
@click.option("--key", default="id", show_default=True, help="id|sequence|sequence_norm|sequence_ci.")
@click.option("--key-col", default=None, help="Input column holding the key (default: --key).")
@click.option("--columns", default=None, help="Comma-separated input columns to attach (default: all).")
@click.option("--allow-overwrite", is_flag=True, help="Replace values of columns that already exist.")
@click.option("--allow-missing", is_flag=True, help="Skip rows whose key is not in the dataset.")
@click.option("--parse-json/--no-parse-json", default=True, show_default=True, help="Parse JSON-like cells.")
@click.option("--note", default=None, help="Command text recorded in meta.md (default: this command).")
@pass_usr
def attach_cmd(
    usr: UsrContext,
    dataset: str,
    path: str,
    namespace: str,
    key: str,
    key_col: str | None,
    columns: str | None,
    allow_overwrite: bool,
    allow_missing: bool,
    parse_json: bool,
    note: str | None,
) -> None:
    """Attach namespaced overlay columns from a file to DATASET."""
    result = attach(
        open_dataset(usr.root, dataset),
        path,
        namespace,
        key=key,
        key_col=key_col,
        columns=_csv_list(columns),
        allow_overwrite=allow_overwrite,
        allow_missing=allow_missing,
        parse_json=parse_json,
        command=note or shlex.join(["usr", *sys.argv[1:]]),
    )
    say(
        f"Attached {result.rows_matched} matched row(s) of {namespace} columns into "
        f"{result.dataset.dataset_id} (input file: {path})"
    )


# ---------------------------------------------------------------------------------------------
# head / info / validate / ls


@click.command("head")
@click.argument("dataset")
@click.option("-n", "n", default=10, show_default=True, type=int, help="Rows to show.")
@click.option("--columns", default=None, help="Comma-separated columns to show.")
@click.option(
    "--include-deleted", is_flag=True, help="Also show tombstoned rows (and the usr__deleted* columns)."
)
@click.option("--raw", is_flag=True, help="Print cells without prettifying.")
@click.option("--max-colwidth", default=80, show_default=True, type=int)
@click.option("--max-list-items", default=6, show_default=True, type=int)
@click.option("--precision", default=4, show_default=True, type=int)
@pass_usr
def head_cmd(
    usr: UsrContext,
    dataset: str,
    n: int,
    columns: str | None,
    include_deleted: bool,
    raw: bool,
    max_colwidth: int,
    max_list_items: int,
    precision: int,
) -> None:
    """Show the first rows of DATASET (base + overlays; tombstoned rows hidden)."""
    if n < 0:
        raise DatasetError("head row count must be >= 0.")
    for option, value, least in (
        ("--max-colwidth", max_colwidth, 1),
        ("--max-list-items", max_list_items, 0),
        ("--precision", precision, 0),
    ):
        if value < least:
            raise UsrError(f"head {option} must be >= {least} (got {value}).")
    result = head_dataset(
        open_dataset(usr.root, dataset),
        n,
        _csv_list(columns),
        include_deleted=include_deleted,
        max_columns=WIDE_LIMIT,
    )
    names = result.columns
    rows = []
    for record in table_rows(result.table):
        cells = []
        for name in names:
            value = record[name]
            text = (
                ""
                if raw and value is None
                else (
                    str(value) if raw else format_cell(value, precision=precision, max_items=max_list_items)
                )
            )
            cells.append(ellipsize(printable(text), max_colwidth))  # cells come from input files
        rows.append(cells)
    click.echo(render_table([printable(n) for n in names], rows))


@click.command("info")
@click.argument("dataset")
@click.option("--format", "fmt", type=click.Choice(["plain", "json"]), default="plain", show_default=True)
@pass_usr
def info_cmd(usr: UsrContext, dataset: str, fmt: str) -> None:
    """Rows, columns, overlays, size and event count of DATASET."""
    info = dataset_info(open_dataset(usr.root, dataset))
    if fmt == "json":
        click.echo(json.dumps(dataclasses.asdict(info), indent=2))
        return
    say(f"dataset: {info.dataset_id}")
    say(f"path: {info.path}")
    say(f"rows: {info.rows}")
    say(f"columns: {', '.join(info.base_columns + info.overlay_columns)}")
    click.echo("overlays:" + ("" if info.overlays else " none"))
    for overlay in info.overlays:
        kind = ("compact" if overlay.compact else "") + (
            f"{' + ' if overlay.compact else ''}{overlay.parts} part(s)" if overlay.parts else ""
        )
        say(f"  - {overlay.namespace} ({kind}): {', '.join(overlay.columns)}")
    click.echo(f"size: {iec_size(info.size_bytes)} ({info.size_bytes} bytes)")
    click.echo(f"events: {info.events}")


@click.command("validate")
@click.argument("dataset")
@click.option(
    "--strict",
    is_flag=True,
    help="Treat warnings as errors; check materialized columns against the registry (as the public tool).",
)
@click.option(
    "--registry-mode",
    type=click.Choice(REGISTRY_MODES, case_sensitive=False),
    default=DEFAULT_REGISTRY_MODE,
    show_default=True,
    help="Registry the overlays' stamps and columns are checked against (as the public tool; "
    "docs/interop.md).",
)
@pass_usr
def validate_cmd(usr: UsrContext, dataset: str, strict: bool, registry_mode: str) -> None:
    """Check DATASET: schema, metadata, ids, overlays and the event log."""
    ref = open_dataset(usr.root, dataset)
    report = validate_dataset(ref, registry_mode=registry_mode, strict=strict)
    for warning in report.warnings:
        click.echo(f"WARNING: {printable(warning)}")
    problems = report.errors + (report.warnings if strict else [])
    if problems:
        for problem in report.errors:
            click.echo(f"  - {printable(problem)}")
        raise DatasetError(
            f"Dataset '{report.dataset_id}' failed validation with {len(problems)} problem(s)"
            + (" (warnings count under --strict)" if strict and report.warnings else "")
            + ". Fix the problems listed above.",
            hint=_torn_log_fix(ref.dir),
        )
    say(f"OK: dataset '{report.dataset_id}' is valid ({len(report.warnings)} warning(s)).")


def _torn_log_fix(dataset_dir: Path) -> str | None:
    """The truncate fix when the event log ends with a torn line, else None."""
    try:
        require_complete_log(dataset_dir)
    except EventLogError as exc:
        return exc.hint
    return None


def register(group: click.Group) -> None:
    """Add this module's commands to the `usr` group."""
    for command in (
        init_cmd,
        import_cmd,
        attach_cmd,
        head_cmd,
        info_cmd,
        validate_cmd,
    ):
        group.add_command(command)
