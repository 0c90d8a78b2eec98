"""Write a notebook (no outputs) from a list of cells: ("md", text), ("code", src) or
("params", src) for the one cell tagged `parameters`. Used to create the study's notebooks;
after creation the .ipynb files are the source and may be edited in JupyterLab."""
from __future__ import annotations

import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def build(path: str, cells: list[tuple[str, str]]) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            nb.cells.append(new_markdown_cell(src))
        else:
            c = new_code_cell(src)
            if kind == "params":
                c.metadata["tags"] = ["parameters"]
            nb.cells.append(c)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    print("wrote", path, file=sys.stderr)
