"""``python -m mdlib.data check FILE`` / ``list`` / ``require``."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Iterable

from . import DataError, __doc__ as _doc, check_file, dataset_names, profile_datasets, require


def _main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mdlib.data", description=_doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a dataset .npz file")
    c.add_argument("file")
    c.add_argument("--no-md5", action="store_true", help="skip the official-md5 check")
    sub.add_parser("list", help="list registered datasets")
    r = sub.add_parser("require", help="fetch and verify every dataset a run needs, or refuse "
                       "(before any work starts) with what to put where")
    r.add_argument("--profile", help="the datasets of this profile's notebooks")
    r.add_argument("--grid", action="append", default=[], help="and of this sweep grid "
                   "(studies/*.yaml; repeatable)")
    r.add_argument("--dataset", action="append", default=[], metavar="NAME[:SIZE]",
                   help="and this dataset (repeatable)")
    r.add_argument("--root", help="data root (default: MDLIB_DATA_ROOT, else <repo>/data)")
    r.add_argument("--no-download", action="store_true", help="never download")
    r.add_argument("--no-verify", action="store_true", help="skip md5 / count verification")
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.cmd == "list":
        for n in dataset_names():
            print(n)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cmd == "require":
        try:
            items = list(args.dataset)
            if args.profile or args.grid:
                from .. import profiles
                prof = profiles.load(args.profile)
                items = profile_datasets(prof, args.grid) + items
            if not items:
                ap.error("require: give --profile, --grid or --dataset")
            rows = require(items, root=args.root, download=not args.no_download,
                           verify=not args.no_verify)
        except DataError as e:
            print(f"ERROR {e}\nNothing was run: fix the data first.", file=sys.stderr)
            return 1
        from .folders import FOLDERS
        from .sources import SEGMENTATION
        for row in rows:  # image folders are read at any size from the same files
            size = "" if row["dataset"] in FOLDERS or row["dataset"] in SEGMENTATION \
                else f" {row['size']}px"
            print(f"OK {row['dataset']}{size}: {row['status']}")
        return 0
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
