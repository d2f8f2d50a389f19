"""`mnist-ffn demo`: draw a digit and watch the network think, on a local web page (Gradio).

The page shows what the lesson's forward pass does with a drawing: the 28x28 image the model
actually sees (the exact preprocessing of `mnist-ffn predict`: the same functions), each hidden
layer's activations a = f(z) as a small heat map, and the probabilities of every class.

Everything here but `build_page` and `serve` is plain torch and Pillow, so the tests can check the
page's numbers against `predict` without a browser.
"""

from __future__ import annotations

import json
import math
import os
import threading
import webbrowser
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from mnist_ffn.catalog import DATASETS
from mnist_ffn.errors import CheckpointError, ImageError, MnistFfnError, UsageError
from mnist_ffn.inference.images import preprocess, read_image, to_pil
from mnist_ffn.inference.network import load
from mnist_ffn.training.model import architecture
from mnist_ffn.web.serving import (
    OnlyThisServer,
    allowed_hosts,
    announce_exposure,
    bind_host,
    check_port,
    page_url,
    quiet_server_logs,
)

HEATMAP_CELL = 8  # screen pixels per unit in a layer's heat map
SEEN_SCALE = 8  # the 28x28 input shown at 224x224
BLANK_HINT = "Draw a digit on the canvas, or upload a photo of one."
SELECT_BRUSH = """() => {
    // Keep the brush in hand: the canvas starts with no tool, and clearing it drops the tool again
    // (it then says "select the draw tool to start"). A tool the person picked (the eraser) stays.
    setInterval(() => {
        const box = document.querySelector('#canvas');
        if (!box) return;
        const idle = [...box.querySelectorAll('div, span, p')].some(
            (node) => node.offsetParent !== null && node.textContent.trim() === 'select the draw tool to start');
        if (idle) box.querySelector('button[aria-label="Brush"]')?.click();
    }, 250);
}"""
WIPE_CANVAS = """() => { document.querySelector('#canvas button[aria-label="Clear canvas"]')?.click(); return []; }"""
MAX_FILE_BYTES = 20 * 1024 * 1024  # larger uploads are refused by the server; read_image then limits pixels
MALFORMED_CALL = "Not a call this page makes: it takes a drawing from its canvas or a file from its upload box."


@dataclass
class Layer:
    """One hidden layer as the page names it: its width and activation, and its a = f(z) for one image."""

    index: int
    width: int
    activation: str

    @property
    def title(self) -> str:
        return f"hidden layer {self.index}: {self.width} units, a = {self.activation}(z)"


@dataclass
class Answer:
    """What the page shows for one image."""

    probabilities: dict[str, float]  # class name -> probability, every class
    seen: Image.Image  # the 28x28 input, greyscale, light on dark as MNIST
    activations: list[torch.Tensor]  # per hidden layer: a = f(z), shape (width,)


class DemoModel:
    """A checkpoint ready to answer images: the trained network (inference.network) and the page's names for it."""

    def __init__(self, checkpoint_path: Path, device: str = "auto"):
        network = load(checkpoint_path, device=device)  # one line and exit 1 for anything that is not a checkpoint
        if network.plane is not None:
            raise UsageError(f"{checkpoint_path}: a network of 2-D points ({network.dataset}); the demo reads drawings")
        info = DATASETS.get(network.dataset)
        if info is None or network.dataset != network.config.data.dataset or len(network.classes) != len(info.classes):
            raise CheckpointError(
                f"{checkpoint_path}: says it was trained on {network.dataset!r} with {len(network.classes)} classes, "
                f"but its config says {network.config.data.dataset!r}: not a checkpoint mnist-ffn wrote"
            )
        self.network = network
        self.config, self.dataset, self.classes = network.config, network.dataset, network.classes
        activation = self.config.model.activation
        self.layers = [Layer(number, width, activation) for number, width in enumerate(self.config.model.hidden, 1)]
        self.header = _header(checkpoint_path, self.config, self.dataset)

    def answer(self, image: Image.Image) -> Answer:
        """The forward pass, layer by layer, for one image (raises ImageError for a blank or unreadable one)."""
        frame = preprocess(image, self.dataset)  # (28, 28), 0-255: exactly what `predict` feeds the model
        probabilities, activations = self.network.forward_pass(frame[None])
        return Answer(
            probabilities={name: float(p) for name, p in zip(self.classes, probabilities[0], strict=True)},
            seen=to_pil(frame),
            activations=[a[0] for a in activations],
        )


def _header(checkpoint_path: Path, config, dataset: str) -> str:
    """What the checkpoint is, with the run's test accuracy when its summary.json lies beside it."""
    text = f"**{architecture(config.model)}** trained on **{DATASETS[dataset].title}** · `{checkpoint_path}`"
    summary_path = checkpoint_path.parent / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
        accuracy = float(summary["test_accuracy"])
        if summary.get("test_checkpoint") == checkpoint_path.name and math.isfinite(accuracy):
            text += f" · test accuracy **{accuracy:.2%}** (from {summary_path.name})"
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a checkpoint on its own: no accuracy to show
    return text


def heatmap(values: torch.Tensor) -> Image.Image:
    """A layer's activations as a near-square grid of cells, dark (lowest) to bright (highest)."""
    width = values.numel()
    columns = math.ceil(math.sqrt(width))
    rows = math.ceil(width / columns)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else torch.zeros_like(values)
    grid = torch.zeros(rows * columns)
    grid[:width] = scaled * 255.0
    cells = to_pil(grid.view(rows, columns))
    return cells.resize((columns * HEATMAP_CELL, rows * HEATMAP_CELL), Image.Resampling.NEAREST).convert("RGB")


def canvas_image(value) -> Image.Image | None:
    """The drawing in a Sketchpad's value (a dict with a composite image), or None for an empty canvas."""
    if value is None:
        return None
    image = value.get("composite") if isinstance(value, dict) else value
    if image is None:
        return None
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    if image.getbbox() is None:  # fully transparent or black: nothing drawn yet
        return None
    return image


def nothing_to_show(model: DemoModel, message: str):
    """The page's outputs with no prediction: empty probabilities, input and heat maps, and why."""
    return None, None, [None] * len(model.layers), message


def respond(model: DemoModel, image: Image.Image | None):
    """(probabilities, seen image, per-layer heat maps, message) for the page; never raises for bad input."""
    if image is None:
        return nothing_to_show(model, BLANK_HINT)
    try:
        answer = model.answer(image)
    except ImageError as exc:
        return nothing_to_show(model, f"{exc}. {BLANK_HINT}")
    seen = answer.seen.resize((28 * SEEN_SCALE, 28 * SEEN_SCALE), Image.Resampling.NEAREST)
    maps = [heatmap(values) for values in answer.activations]
    best = max(answer.probabilities, key=answer.probabilities.get)
    listed = " · ".join(f"{name} {p:.3f}" for name, p in answer.probabilities.items())
    text = f"The network says **{best}** ({answer.probabilities[best]:.1%}).\n\n{listed}"
    return answer.probabilities, seen, maps, text


def uploaded_image(path: str | None) -> Image.Image | None:
    """An uploaded file, read as `predict` reads one (size limit included); ImageError says why not, naming
    the file as the person called it (Gradio keeps its original name), not the server's temporary copy."""
    if path is None:
        return None
    return read_image(Path(path), name=Path(path).name)


def build_page(model: DemoModel):
    """The Gradio page: canvas and upload on the left, what the network makes of them on the right."""
    import gradio as gr

    class Page(gr.Blocks):
        """A page whose API answers a malformed call (one the page itself never makes) with one message to
        the caller, instead of a traceback on the server's stderr for each: Gradio validates a call's input
        against each component's schema before any handler of ours runs, and prints whatever fails there."""

        async def preprocess_data(self, *args, **kwargs):
            try:
                return await super().preprocess_data(*args, **kwargs)
            except gr.Error:
                raise
            except Exception:
                raise gr.Error(MALFORMED_CALL, print_exception=False) from None

    with Page(title="mnist-ffn demo") as page:
        gr.Markdown(f"## Draw a digit and watch the network think\n{model.header}", elem_id="header")
        with gr.Row():
            with gr.Column(scale=1):
                canvas = gr.Sketchpad(
                    label="Draw here (mouse, pen or finger)",
                    type="pil",
                    image_mode="RGBA",
                    canvas_size=(280, 280),
                    brush=gr.Brush(default_size=18, colors=["#000000"], color_mode="fixed"),
                    layers=False,
                    transforms=(),
                    elem_id="canvas",
                )
                # a file, not an image component: whatever arrives is read by `predict`'s reader, which says
                # what is wrong with a file that is not an image, or too big, instead of failing in Gradio
                upload = gr.File(label="...or upload a photo", type="filepath", elem_id="upload", height=120)
                clear = gr.Button("Clear", elem_id="clear")
            with gr.Column(scale=1):
                message = gr.Markdown(BLANK_HINT, elem_id="message")
                probabilities = gr.Label(
                    label="Probabilities", num_top_classes=len(model.classes), elem_id="probabilities"
                )
                seen = gr.Image(label="What the network sees (28 x 28)", type="pil", elem_id="seen", height=240)
        layer_maps = []
        with gr.Row(elem_id="layers"):
            if not model.layers:
                gr.Markdown("No hidden layer: this network is softmax regression, z = Wx + b straight to the classes.")
            for layer in model.layers:
                layer_maps.append(gr.Image(label=layer.title, type="pil", elem_classes=["layer"], height=200))

        outputs = [probabilities, seen, *layer_maps, message]

        def flat(values):  # respond's four values as Gradio's list of outputs
            chances, picture, maps, text = values
            return chances, picture, *maps, text

        def from_canvas(value):
            try:
                image = canvas_image(value)
            except (AttributeError, TypeError, ValueError):  # a malformed call to the page's API
                return flat(nothing_to_show(model, f"Not a drawing. {BLANK_HINT}"))
            return flat(respond(model, image))

        def from_upload(path):
            try:
                image = uploaded_image(path)
            except ImageError as exc:
                return flat(nothing_to_show(model, str(exc)))
            except (AttributeError, TypeError, ValueError, OSError):  # a malformed call to the page's API
                return flat(nothing_to_show(model, f"Not a file. {BLANK_HINT}"))
            return flat(respond(model, image))

        drawn = canvas.change(
            from_canvas, inputs=canvas, outputs=outputs, trigger_mode="always_last", show_progress="hidden"
        )
        uploaded = upload.change(from_upload, inputs=upload, outputs=outputs, show_progress="hidden")
        # The canvas is wiped in the browser by its own "Clear canvas" button, which keeps the editor in a
        # state it can draw in again; the server then empties everything else.
        clear.click(
            lambda: (None, *flat(nothing_to_show(model, BLANK_HINT))),
            outputs=[upload, *outputs],
            js=WIPE_CANVAS,
            show_progress="hidden",
            cancels=[drawn, uploaded],  # an answer still on its way must not land on the cleared page
        )
    return page


def serve(
    checkpoint_path: Path,
    *,
    host: str,
    port: int,
    open_browser: bool,
    device: str = "auto",
    allow_hosts: tuple[str, ...] = (),
) -> None:
    """Check everything that can be checked, then serve the page until Ctrl-C."""
    model = DemoModel(checkpoint_path, device)  # a bad checkpoint is refused before any server starts
    check_port(host, port)
    allowed = allowed_hosts(host, port, allow_hosts)
    announce_exposure(host, port, allowed)
    # A local page for one person: no usage reports to Gradio's servers (nor a wait on them offline).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # seconds to import: only once the checkpoint and the port are known good
        import uvicorn
        from fastapi import FastAPI
    except ImportError:
        raise MnistFfnError("the demo needs Gradio: pip install 'mnist-ffn[demo]'") from None
    quiet_server_logs()
    page = build_page(model)
    page.queue(default_concurrency_limit=4)
    # Gradio's page on the project's own server, as the playground's: the same host check, any address (Gradio's
    # launch() cannot name an IPv6 one)
    app = gradio.mount_gradio_app(
        FastAPI(docs_url=None, redoc_url=None, openapi_url=None),
        page,
        path="/",
        server_name=bind_host(host),
        server_port=port,
        show_error=True,
        max_file_size=MAX_FILE_BYTES,
        js=SELECT_BRUSH,  # the canvas starts with its brush in hand, so the first stroke draws
    )
    # Gradio refuses a call naming a file that no one uploaded (/etc/passwd) only on a page it calls launched, as
    # launch() marks it; mounting does not (tests/test_demo.py sends such calls)
    page.has_launched = True
    app.add_middleware(OnlyThisServer, allowed=allowed)  # outermost: no rebound name, no other site
    url = page_url(host, port)
    print(f"mnist-ffn demo: {url} (Ctrl-C to stop)", flush=True)
    if open_browser:
        threading.Timer(1.0, lambda: webbrowser.open(url)).start()
    config = uvicorn.Config(app, host=bind_host(host), port=port, log_level="warning", access_log=False)
    uvicorn.Server(config).run()
