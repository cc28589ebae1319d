"""The ``melstore`` command line."""

from __future__ import annotations

import sys
import time

import click

from melstore.errors import MelstoreError


class Failure(click.ClickException):
    """An expected error: one line on stderr, exit status 2 (1 means "differences found")."""

    exit_code = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="melstore")
def main() -> None:
    """Log-scaled mel spectrogram feature stores: inspect and check them."""


@main.command()
@click.argument("store", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False),
    help="Where the dataset is now (default: the root recorded in the store).",
)
def verify(store: str, root: str | None) -> None:
    """Re-hash the sources of STORE and list files that changed, vanished or are new.

    Prints one line per difference, then a summary on stderr. Exits 1 if
    anything differs, 0 if the store still matches its sources.
    """
    from melstore.verify import verify_sources

    start = time.perf_counter()
    try:
        changes = verify_sources(store, root=root)
    except MelstoreError as err:
        raise Failure(str(err)) from None
    for change in changes:
        click.echo(f"{change.kind:<8} {change.path}")
    seconds = time.perf_counter() - start
    counts = {kind: sum(c.kind == kind for c in changes) for kind in ("changed", "missing", "new")}
    click.echo(
        f"{store}: {counts['changed']} changed, {counts['missing']} missing, {counts['new']} new "
        f"({seconds:.1f} s)",
        err=True,
    )
    sys.exit(1 if changes else 0)


if __name__ == "__main__":
    main()
