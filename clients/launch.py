"""The `spendgate` command's entry point, kept to this one import-free module.

`spendgate up` and `spendgate dataplane` start Hypercorn's workers with
multiprocessing's spawn, which runs the parent's main script again in every
worker. The console script imports its entry point's module, so were that
`clients.cli` (with the catalog, genai-prices, SQLAlchemy and the exports
behind it), each worker would import all of it before its own app: about a
second of CPU per worker, spent again on every start."""

from __future__ import annotations


def main() -> int:
    from clients.cli import main as cli_main  # only in the process that runs the command

    return cli_main()
