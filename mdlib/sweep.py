"""``python -m mdlib.sweep GRID ...``: the command-line entry of the sweep runner
(:mod:`mdlib.runs.sweep`, where the code and its documentation live)."""
import sys

if __name__ == "__main__":
    from mdlib.runs.sweep import main
    sys.exit(main())
