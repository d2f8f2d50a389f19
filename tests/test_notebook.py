"""examples/lesson.ipynb executes afresh and reaches its key numbers; the committed copy holds its outputs.

Each cell asserts what it shows (the neuron recovers its line, the folded product equals the network, the
chain rule equals autograd...), so executing it is the check; this test also reads the numbers it prints.
"""

import re

from tests.helpers import PROJECT_ROOT, real_data_dir, require_modules

NOTEBOOK = PROJECT_ROOT / "examples" / "lesson.ipynb"


def notebook_tools():
    require_modules("matplotlib", install="the notebook draws: pip install -e '.[plot]'")
    _, nbclient, nbformat = require_modules("ipykernel", "nbclient", "nbformat", install="pip install -e '.[test]'")
    return nbclient, nbformat


def printed(notebook) -> str:
    return "".join(
        "".join(output.get("text", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def test_the_committed_notebook_renders_with_its_outputs():
    _, nbformat = notebook_tools()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("outputs") or "import" in cell.source for cell in code), "a cell without its output"
    assert not any(output.get("output_type") == "error" for cell in code for output in cell.outputs)
    assert sum(1 for cell in code for output in cell.outputs if "image/png" in output.get("data", {})) >= 2


def test_the_notebook_executes_and_reaches_its_numbers(monkeypatch, tmp_path):
    """Run as a user who downloaded it alone would: in a folder of its own, outside the checkout; it leaves no
    temporary folder behind."""
    nbclient, nbformat = notebook_tools()
    monkeypatch.setenv("MNIST_FFN_DATA", str(real_data_dir()))
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))  # where the kernel's tempfile puts its folders
    elsewhere = tmp_path / "downloads"
    elsewhere.mkdir()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(elsewhere)}})  # fmt: skip
    client.execute()  # raises CellExecutionError, with the cell, if an assertion in it fails
    assert not [path for path in temporary.iterdir() if path.name.startswith("mnist-ffn")], "a folder left behind"
    assert not list(elsewhere.iterdir()), "nothing written where it ran"
    text = printed(notebook)
    w, b = map(float, re.search(r"fitted: w = ([\d.]+), b = ([\d.]+)", text).groups())
    assert abs(w - 3) < 0.05 and abs(b - 2) < 0.05
    assert float(re.search(r"chain rule against autograd: largest gradient difference (\S+)", text)[1]) < 1e-6
    by_hand = re.search(r"one point's chain rule by hand against mnist-ffn's: largest difference (\S+)", text)
    assert float(by_hand[1]) < 1e-12
    assert re.search(r"gradient check: \d+ weights and biases, all agree: True", text)
    flow = re.search(r"output layer, mean over the epochs: sigmoid (\S+), relu (\S+)", text)
    sigmoid, relu = float(flow[1]), float(flow[2])
    assert sigmoid < 0.01 and relu > 0.1
    identity, relu = (float(value) for value in re.search(r"identity ([\d.]+)%, relu ([\d.]+)%", text).groups())
    assert identity <= 75 and relu >= 95
    assert float(re.search(r"test accuracy ([\d.]+)% on 10,000 images", text)[1]) >= 90
    assert "seven.png: the network says 7" in text
