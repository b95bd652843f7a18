"""docs/notebooks/d2l-rnn.ipynb, executed top to bottom in a real Jupyter kernel (nbclient) with a few epochs:
no cell fails, training shows as one updating output (not a line per epoch), the loss plot is an inline
image, the chapter's prefixes are written from, and the surprisal view renders inline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

MISSING = [m for m in ("nbclient", "nbformat", "ipykernel") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}: pip install -e '.[dev]'")
NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebooks" / "d2l-rnn.ipynb"
SMALL = 'from pathlib import Path\nEPOCHS = 2\nBUDGET = "5s"\nRUNS = Path("runs")'


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    import nbclient
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (settings,) = [c for c in notebook.cells if c.source.startswith("# the chapter's settings")]
    settings.source = SMALL  # the chapter's 250 epochs and 2 minutes, made a few seconds
    folder = tmp_path_factory.mktemp("notebook")
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    return notebook, folder


def code_cell(notebook, starts: str):
    (cell,) = [c for c in notebook.cells if c.cell_type == "code" and starts in c.source]
    return cell


@pytest.mark.slow
def test_every_cell_runs_and_training_is_one_updating_output(executed):
    notebook, folder = executed
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    training = code_cell(notebook, "rnn = charlm.train(")
    assert [o.output_type for o in training.outputs] == ["display_data"]  # one output, updated in place
    page = training.outputs[0]["data"]["text/html"]
    assert "charlm</b> jaychou" in page and "<b>done</b>" in page and "epoch 2" in page
    assert (folder / "runs" / "d2l-rnn" / "best.pt").is_file()


def test_the_loss_plot_is_an_inline_image(executed):
    plot = code_cell(executed[0], "plot_runs(")
    assert [o.output_type for o in plot.outputs] == ["execute_result"] and "image/png" in plot.outputs[0]["data"]


def test_the_chapters_prefixes_are_written_from(executed):
    cell = code_cell(executed[0], 'for prefix in ("分开", "不分开")')
    lines = "".join(o["text"] for o in cell.outputs if o.output_type == "stream").splitlines()
    assert lines[0].startswith("分开") and lines[1].startswith("不分开")
    assert "perplexity" in cell.outputs[-1]["data"]["text/plain"]


def test_auto_sizing_says_what_it_chose_and_the_surprisal_view_renders(executed):
    auto = code_cell(executed[0], "auto_config(")
    assert "this machine trains it at" in "".join(o.get("text", "") for o in auto.outputs)
    view = code_cell(executed[0], "surprisal.analyse(")
    assert any("text/html" in o.get("data", {}) for o in view.outputs)  # rich's shaded text, as HTML in Jupyter


def test_the_notebooks_d2l_config_is_the_seed_config():
    import nbformat

    import charlm

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cell = code_cell(notebook, "d2l = charlm.load_config(")
    scope = {"EPOCHS": 250}
    exec(cell.source, scope)  # the cell only builds the config
    seed = charlm.load_config(NOTEBOOK.parents[2] / "configs" / "d2l-jaychou-rnn.yaml")
    assert scope["d2l"] == seed  # every setting of d2l's code, none left at charlm's defaults
