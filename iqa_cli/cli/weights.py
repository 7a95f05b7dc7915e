"""`iqa weights`: list, fetch, verify, import, add, path, rm (argument parsing only; the work is in
`iqa_cli.weights`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import typer

from iqa_cli.cli.console import ConsoleProgress, err, out, print_json
from iqa_cli.errors import CheckpointError, ConfigError, DataError, DownloadError
from iqa_cli.weights.fetch import MIRROR_ENV, FetchOptions, fetch
from iqa_cli.weights.names import validate_name
from iqa_cli.weights.registry import known_weights, shown_url
from iqa_cli.weights.store import WeightStore

app = typer.Typer(
    rich_markup_mode=None,
    help="Fetch, verify, import and manage checkpoints in the local weights store ($IQA_HOME/weights).",
    no_args_is_help=True,
)


def _mb(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.1f} MB"


def _print_columns(lines: Sequence[tuple[str, ...]]) -> None:
    """Plain aligned columns (like `pip list`): readable in any terminal width, greppable in logs."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        text = "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        out.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command("list")
def list_weights(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of a table."),
    models: bool = typer.Option(False, "--models", help="List the registered networks instead of checkpoints."),
) -> None:
    """The known checkpoints (quality models and backbone ImageNet weights) and what is in the store."""
    if models:
        from iqa_cli.weights.importer import model_summaries

        rows = model_summaries()
        if as_json:
            print_json(rows)  # the same document as `iqa models --json`
            return
        if not rows:
            err.print("no networks are registered")
            return
        lines: list[tuple[str, ...]] = [("MODEL", "PARAMETERS", "INPUTS", "DESCRIPTION")]
        for r in rows:
            params = "?" if r["parameters"] is None else f"{r['parameters'] / 1e6:.2f} M"
            lines.append((r["name"], params, r["inputs"], r["description"]))
        _print_columns(lines)
        return
    store = WeightStore()
    stored = {e.name: e for e in store.entries()}
    for name, reason in store.problems().items():  # reported and skipped: the other entries stay usable
        err.print(
            f"warning: refused store index entry '{name}': {reason} (`iqa weights rm {name}` or "
            "`iqa weights verify --repair`)",
            highlight=False,
            markup=False,
        )
    known = known_weights()
    rows = []
    for entry in known.values():
        row = entry.to_json()
        row["urls"] = [shown_url(url) for url in row["urls"]]  # a job log never keeps a mirror's token
        s = stored.get(entry.name)
        row["stored"] = None if s is None else {**s.to_json(), "path": str(store.root / s.file)}
        rows.append(row)
    for name, s in stored.items():
        if name not in known:
            rows.append(
                {
                    "name": name,
                    "kind": "local",
                    "method": s.method,
                    "status": "stored",
                    "origin": s.source,
                    "stored": {**s.to_json(), "path": str(store.root / s.file)},
                }
            )
    if as_json:
        print_json({"store": str(store.root), "weights": rows})
        return
    lines = [("NAME", "KIND", "FOR", "DATASET", "SPLIT", "STORED", "STATUS", "CHECK", "SOURCE")]
    for r in rows:
        users = r.get("method") or ",".join(r.get("used_by") or []) or "-"
        size = _mb(r["stored"]["size"]) if r["stored"] else "no"
        urls = r.get("urls") or []
        host = urlparse(urls[0]).netloc.rsplit("@", 1)[-1] if urls else None  # never a mirror's `user:token@`
        source = host or ("local file" if r["kind"] == "local" else "by hand")
        status = "stored" if r["stored"] and not r["status"].startswith("refused") else r["status"]
        check = r.get("verification") or "-"
        check = "prefix only (32 bit)" if check.startswith("sha256 prefix") else check
        lines.append(
            (r["name"], r["kind"], users, r.get("dataset") or "-", r.get("split") or "-", size, status, check, source)
        )
    _print_columns(lines)
    err.print(
        f"store: {store.root}  (status: download = `iqa weights fetch NAME`; manual = download by hand and "
        "`iqa weights import`; see `iqa weights list --json` for URLs, hashes and notes)"
    )


@app.command("fetch")
def fetch_weights(
    names: list[str] = typer.Argument(None, help="Known checkpoint names (see `iqa weights list`)."),
    all_: bool = typer.Option(False, "--all", help="Fetch every known checkpoint that has a public download."),
    mirror: str = typer.Option(
        None, "--mirror", help=f"Mirror base URL; the file name is appended [env: {MIRROR_ENV}]."
    ),
    force: bool = typer.Option(False, "--force", help="Download again even if the store has it."),
    connect_timeout: float = typer.Option(15.0, "--connect-timeout", help="Seconds to open a connection."),
    read_timeout: float = typer.Option(60.0, "--read-timeout", help="Seconds without data before a retry."),
    retries: int = typer.Option(5, "--retries", min=0, help="Retries per URL for transient failures."),
) -> None:
    """Download checkpoints into the store: resumable, retried, SHA-256 verified before they are stored."""
    if bool(names) == all_:
        raise ConfigError("give checkpoint names or --all (not both)")
    options = FetchOptions(
        connect_timeout=connect_timeout, read_timeout=read_timeout, retries=retries, mirror=mirror or None
    )
    store = WeightStore()
    known = known_weights()
    if all_:
        names = []
        for entry in known.values():
            if entry.downloadable:
                names.append(entry.name)
            else:
                err.print(f"skipped {entry.name}: {entry.status} (see `iqa weights list --json`)", highlight=False)
    failures = []
    for name in names:
        try:
            had = store.has(name) and not force
            stored = fetch(name, store=store, options=options, progress=ConsoleProgress(), force=force)
        except (DownloadError, ConfigError, CheckpointError) as exc:
            if len(names) == 1:
                raise
            err.print(f"error: {exc}", highlight=False, markup=False)
            failures.append(name)
            continue
        verified = stored.extra.get("verified", "sha256")
        if had:
            note = "already in the store"
        elif str(verified).startswith("sha256 prefix"):
            note = (
                f"matches its published {verified} only (32 bits, not a full check); its full SHA-256 "
                f"{stored.sha256} is pinned in the store and re-checked by `iqa weights verify`"
            )
        else:
            note = f"verified (full {verified})"
        err.print(f"{name}: {note}", highlight=False)
        out.print(str(store.root / stored.file), highlight=False, markup=False)
    if failures:
        raise DownloadError(f"{len(failures)} of {len(names)} downloads failed: {', '.join(failures)}")


@app.command("verify")
def verify_weights(
    target: str = typer.Argument(None, help="A store name or a file path; default: everything in the store."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    repair: bool = typer.Option(
        False,
        "--repair",
        help="Rebuild the index from the files (drop refused or missing entries, add unlisted files).",
    ),
) -> None:
    """Re-hash stored files against the recorded SHA-256 (and the registry's), or identify a file."""
    from iqa_cli.weights.verify import identify_file, verify_all, verify_stored

    if repair and target is not None:  # it rebuilt the whole index, ignoring the name, and said nothing
        raise ConfigError(
            f"--repair rebuilds the index of the whole store; it takes no name or file (given {target!r})"
        )
    store = WeightStore()
    if repair:
        report = store.repair()
        if as_json:
            print_json(report)
        else:
            for kind, items in report.items():
                for item in items:
                    err.print(f"{kind}: {item}", highlight=False, markup=False)
            err.print(f"index of {store.root} rebuilt", highlight=False, markup=False)
        return
    for name, reason in store.problems().items():
        err.print(f"refused index entry '{name}': {reason}", highlight=False, markup=False)
    path = Path(target).expanduser() if target else None
    if path is not None and path.is_file() and store.find_by_path(path) is None:
        info = identify_file(path, store)
        if as_json:
            print_json(info)
            return
        out.print(f"{info['sha256']}  {path}", highlight=False, markup=False)
        err.print(
            f"stored as: {', '.join(info['stored_as']) or '-'}; known as: {', '.join(info['known_as']) or '-'}",
            highlight=False,
        )
        return
    if target is None:
        results = verify_all(store)
        if not results:  # "verified" with nothing checked would pass a job script's `verify && ...` guard
            raise DataError(f"nothing to verify: the weights store {store.root} holds no checkpoint")
    else:
        entry = store.find_by_path(path) if path is not None and path.is_file() else None
        results = [verify_stored(entry.name if entry else validate_name(target), store)]
    if as_json:
        print_json([{**r.__dict__, "path": str(r.path)} for r in results])
    else:
        for r in results:
            mark = "ok" if r.ok else "FAILED"
            out.print(f"{mark:6} {r.name}  {r.actual or '-'}  {r.reason}", highlight=False, markup=False)
    failed = [r.name for r in results if not r.ok]
    if failed:
        raise CheckpointError(f"verification failed for {len(failed)} file(s): {', '.join(failed)}")


@app.command("import")
def import_weights(
    method: str = typer.Argument(..., help="Model the checkpoint is for (see `iqa weights list --models`)."),
    file: Path = typer.Argument(..., help="The authors' checkpoint file (.pt/.pth/.pth.tar/.safetensors)."),
    name: str = typer.Option(None, "--name", help="Store name (default: METHOD-<file stem>)."),
    force: bool = typer.Option(False, "--force", help="Replace a stored file of the same name."),
) -> None:
    """Convert an authors' checkpoint to our key names, check every shape, and store it as safetensors."""
    from iqa_cli.weights.importer import import_checkpoint

    stored = import_checkpoint(method, file, name, overwrite=force)
    err.print(f"imported {file} as '{stored.name}' (source sha256 {stored.source_sha256})", highlight=False)
    out.print(str(WeightStore().root / stored.file), highlight=False, markup=False)


@app.command("add")
def add_weights(
    name: str = typer.Argument(..., help="Store name."),
    file: Path = typer.Argument(..., help="A file in our format, or a backbone's weights file."),
    method: str = typer.Option(None, "--method", help="Check that every tensor fits this model."),
    force: bool = typer.Option(False, "--force", help="Replace a stored file of the same name."),
) -> None:
    """Store an already-converted file (checked to be plain tensors, and the registry's file if known)."""
    from iqa_cli.train.weights import add_checkpoint

    stored = add_checkpoint(name, file, method=method, overwrite=force)
    err.print(f"added {file} as '{stored.name}' (sha256 {stored.sha256})", highlight=False)
    out.print(str(WeightStore().root / stored.file), highlight=False, markup=False)


@app.command("path")
def path_weights(name: str = typer.Argument(..., help="Store name.")) -> None:
    """Print the file of a stored checkpoint (nothing is downloaded)."""
    out.print(str(WeightStore().path(validate_name(name))), highlight=False, markup=False, soft_wrap=True)


@app.command("rm")
def rm_weights(name: str = typer.Argument(..., help="Store name.")) -> None:
    """Remove a checkpoint from the store."""
    entry = WeightStore().rm(validate_name(name))
    if entry is None:
        err.print(f"removed the refused index entry '{name}' (no file was deleted)", highlight=False)
    else:
        err.print(f"removed '{entry.name}' ({entry.file})", highlight=False)
