"""The evaluation notebook runs top to bottom on a small BBC subset (so it never rots)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.model

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "evaluation.ipynb"


def test_evaluation_notebook_executes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOMMENDER_NOTEBOOK_LIMIT", os.environ.get(
        "RECOMMENDER_NOTEBOOK_LIMIT", "120"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for o in cell.get("outputs", []))
    assert "precision@10" in outputs and "recommender" in outputs and "tfidf" in outputs
