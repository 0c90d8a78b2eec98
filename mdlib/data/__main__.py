"""``python -m mdlib.data check FILE`` / ``python -m mdlib.data list``."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Iterable

from . import DataError, __doc__ as _doc, check_file, dataset_names


def _main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mdlib.data", description=_doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a dataset .npz file")
    c.add_argument("file")
    c.add_argument("--no-md5", action="store_true", help="skip the official-md5 check")
    sub.add_parser("list", help="list registered datasets")
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.cmd == "list":
        for n in dataset_names():
            print(n)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        ds = check_file(args.file, verify=not args.no_md5)
    except DataError as e:
        print(f"ERROR {e}", file=sys.stderr)
        return 1
    status = ds.meta.get("md5_status", "unverified")
    print(f"OK {ds.summary()} md5={status}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
