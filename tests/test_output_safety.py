"""What the commands print is safe to read and to paste: quoted commands, one-line errors whatever a name holds,
any output encoding, help that prints what it says, and files that are not regular files refused, not waited on."""

import inspect
import json
import os
import shutil
import subprocess

import click
import pytest
import typer

from mnist_ffn.cli import commands as cli
from mnist_ffn.training.run_folder import resume_command
from tests.helpers import (
    PROJECT_ROOT,
    TINY_FLAGS,
    assert_one_line_error,
    finish_process,
    run_cli,
    run_process,
    start_forked,
)

HOSTILE_NAMES = ["my runs", 'it\'s "quoted"', "$(touch pwned) `touch pwned2`", "new\nline", "tab\there é"]


def pasted(command: str, cwd) -> list[str]:
    """The arguments bash reads from `command` pasted as is, with mnist-ffn a function that prints them."""
    script = "mnist-ffn() { printf '%s\\0' \"$@\"; }\n" + command
    result = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, check=True)
    return result.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=range(len(HOSTILE_NAMES)))
def test_printed_commands_paste_into_bash_as_the_same_arguments(tiny_run, tiny_data, tmp_path, name):
    folder = shutil.move(tiny_run, tmp_path / name)
    refused = run_cli("train", "--out", folder, "--data-dir", tiny_data, "--quiet", *TINY_FLAGS)
    assert_one_line_error(refused, 2, "already holds a run")
    hint = refused.stderr.split("continue it with ")[1].split(", or replace")[0]
    assert pasted(f"mnist-ffn train {hint}", tmp_path) == ["train", "--resume", str(folder)]
    command = resume_command(folder, tiny_data, "cpu")
    assert "\n" not in command
    assert pasted(command, tmp_path) == [
        "train",
        "--resume",
        str(folder),
        "--data-dir",
        str(tiny_data),
        "--device",
        "cpu",
    ]
    assert not list(tmp_path.glob("pwned*")), "nothing in the name ran"


def test_the_plot_command_of_a_comparison_is_one_line_that_pastes(tiny_data, tmp_path):
    out = tmp_path / ("a folder name long enough that a table caption of 80 columns would wrap it " + "x" * 40)
    result = run_cli(
        "compare", "--activations", "identity,relu", "--epochs", "1", "--data-dir", tiny_data, "--out", out,
        *TINY_FLAGS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("plot with: ")]
    assert pasted(line.removeprefix("plot with: "), tmp_path) == ["plot", str(out)]


def test_every_command_writes_what_an_ascii_output_cannot_encode_as_escapes(tiny_run, tiny_data, tmp_path):
    """PYTHONIOENCODING=ascii makes stdout strict ascii: paths with é, the table's ± and box lines."""
    pytest.importorskip("matplotlib", reason="needs the plot extra")
    pytest.importorskip("optuna", reason="needs the sweep extra")
    run = shutil.move(tiny_run, tmp_path / "résumé")
    image = shutil.copy(PROJECT_ROOT / "examples" / "seven.png", tmp_path / "sept-é.png")
    spec = tmp_path / "spéc.toml"
    spec.write_text(
        "[base]\ndata.verify_checksums = false\ntrain.val_size = 100\ntrain.epochs = 1\n"
        '[space]\nmodel.hidden = [[8]]\n[sweep]\npruner = "none"\n'
    )
    commands = [
        ["train", "--out", tmp_path / "née", "--data-dir", tiny_data, *TINY_FLAGS, "--set", "train.epochs=1"],
        ["eval", run / "best.pt", "--data-dir", tiny_data],
        ["predict", run / "best.pt", image],
        ["plot", run],
        ["sweep", spec, "--out", tmp_path / "balayé", "--data-dir", tiny_data],
        ["sweep", "--report", tmp_path / "balayé"],
        ["compare", "--activations", "relu", "--epochs", "1", "--out", tmp_path / "comparé", "--data-dir", tiny_data,
         *TINY_FLAGS],
    ]  # fmt: skip
    for command in commands:
        result = run_cli(*command, charset="ascii")
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert "\\xe9" in result.stdout, (command, result.stdout)
    fresh = run_process("eval", run / "best.pt", "--data-dir", tiny_data, env={"PYTHONIOENCODING": "ascii"})
    assert fresh.returncode == 0 and "\\xe9" in fresh.stdout, fresh.stderr


def finishes(*args, timeout: float = 30) -> subprocess.CompletedProcess:
    """`mnist-ffn ARGS` in its own process: one that blocks (on a FIFO) fails the test instead of hanging it."""
    process = start_forked(*args)
    try:
        return finish_process(process, timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"mnist-ffn {' '.join(map(str, args))} still runs after {timeout} s")


def test_fifos_and_devices_are_refused_not_read(tiny_run, tmp_path):
    fifo = tmp_path / "digit.png"
    os.mkfifo(fifo)
    result = finishes("predict", tiny_run / "best.pt", fifo, "/dev/zero", "--json")
    assert result.returncode == 1, result.stderr
    errors = {row["image"]: row["error"] for row in json.loads(result.stdout)["predictions"]}
    assert errors == {str(fifo): "not a regular file (a FIFO), not an image file",
                      "/dev/zero": "not a regular file (a device), not an image file"}  # fmt: skip
    assert_one_line_error(finishes("train", "--config", fifo), 2, "not a regular file (a FIFO)")
    assert_one_line_error(finishes("sweep", "/dev/zero"), 2, "not a regular file (a device)")
    assert_one_line_error(finishes("eval", fifo), 1, "not a regular file (a FIFO)")


def _commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command


def test_every_help_text_prints_what_it_says():
    """Typer's rich markup would eat "[sweep]" in pip install 'mnist-ffn[sweep]': every text is read back."""
    group = typer.main.get_command(cli.app)
    for path, command in _commands(group):
        shown = " ".join(run_cli(*path, "--help").stdout.split())
        texts = [inspect.cleandoc(command.help or "")]
        texts += [param.help for param in command.params if getattr(param, "help", None)]
        for text in texts:
            for paragraph in text.split("\n\n"):
                assert " ".join(paragraph.split()) in shown, (path, paragraph)
    for command in ("sweep", "demo", "plot"):
        assert f"pip install 'mnist-ffn[{command}]'" in " ".join(run_cli(command, "--help").stdout.split())


def test_mnist_ffn_alone_prints_its_help_not_an_error():
    alone = run_cli()
    assert alone.returncode == 0 and alone.stderr == "", alone.stderr
    assert alone.stdout == run_cli("--help").stdout and "Commands" in alone.stdout


def test_the_servers_say_who_can_reach_them_by_the_address_bound_and_blame_a_bad_host_on_host(tiny_run, tmp_path):
    from mnist_ffn.errors import ImageError, UsageError
    from mnist_ffn.web.demo import uploaded_image
    from mnist_ffn.web.serving import allowed_hosts, check_port, exposure_warning

    # every spelling of this machine alone, however --host writes it
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "127.1", "2130706433", "0x7f000001", "LOCALHOST",
                 "::ffff:127.0.0.1"):  # fmt: skip
        assert exposure_warning(host, 7860, allowed_hosts(host, 7860)) is None, host
    warning = exposure_warning("0.0.0.0", 7860, allowed_hosts("0.0.0.0", 7860, ["my-laptop.lan"]))
    assert "everyone who can reach this machine" in warning and "my-laptop.lan" in warning, warning
    assert "--allow-host" in warning and "unencrypted" in warning
    with pytest.raises(UsageError, match=r"^--host ::2: not an address of this machine"):
        check_port("::2", 7860)  # bound, never sent to: no address of this machine
    with pytest.raises(UsageError, match=r"^--host no-such-host\.invalid: not an address or name of this machine"):
        check_port("no-such-host.invalid", 7860)
    # the names a server answers to: loopback's and the host as typed, with the port (and without it on 80)
    assert allowed_hosts("127.1", 7861) == {"localhost:7861", "127.0.0.1:7861", "[::1]:7861", "127.1:7861"}
    assert {"localhost", "localhost:80"} <= allowed_hosts("127.0.0.1", 80)
    assert "evil.example:7861" not in allowed_hosts("0.0.0.0", 7861)
    # an IPv6 address as a URL writes it, [::1], is the address ::1; the page's address puts it in brackets
    from mnist_ffn.web.serving import bound_addresses, page_url

    assert bound_addresses("[::1]", 7861) == ["::1"] and "[::1]:7861" in allowed_hosts("[::1]", 7861)
    assert page_url("::1", 7861) == page_url("[::1]", 7861) == "http://[::1]:7861/"
    upload = tmp_path / "gradio-temp" / "4f1c" / "my photo.png"
    upload.parent.mkdir(parents=True)
    upload.write_text("not an image")
    with pytest.raises(ImageError) as caught:
        uploaded_image(str(upload))
    assert str(caught.value).startswith("my photo.png: ") and "gradio-temp" not in str(caught.value)
