"""targets: every file charlm writes on a user's word, through the real CLI of each writer (export --html,
perplexity --html, neurons --html, plot --out) and export --out's folder: a regular file or nothing, never
inside a run or model folder, a file charlm did not write only with --force, refused before any work."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from charlm.cli.main import main
from charlm.store import targets

REPO = Path(__file__).resolve().parents[1]
TEXT = "the cat sat on the mat. the dog ran.\n" * 60
RUN_FILES = (
    "best.pt",
    "last.pt",
    "config.yaml",
    "vocab.json",
    "metrics.jsonl",
    "run.json",
    "status.json",
    ".lock",
    ".lock.pid",
)
MODEL_FILES = ("model.safetensors", "config.json", "vocab.json", "README.md")

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """A real run folder (charlm train) and its model folder (charlm export)."""
    root = tmp_path_factory.mktemp("made")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    assert (
        main(
            [
                "train",
                "--config",
                str(REPO / "configs" / "tiny.yaml"),
                "--corpus",
                str(corpus),
                "--device",
                "cpu",
                "--run-dir",
                str(root / "run"),
                "--set",
                "train.epochs=1",
                "--set",
                "sample.preview_every=0",
            ]
        )
        == 0
    )
    assert main(["export", "--run-dir", str(root / "run"), "--out", str(root / "model")]) == 0
    return {"run": root / "run", "model": root / "model", "corpus": corpus}


def writer_args(writer: str, run: Path) -> list[str]:
    """The command line of `writer` up to its target option."""
    return {
        "export": ["export", "--run-dir", str(run), "--html"],
        "perplexity": ["perplexity", "--run-dir", str(run), "--device", "cpu", "--text", "the cat", "--html"],
        "neurons": ["neurons", "--run-dir", str(run), "--html"],
        "plot": ["plot", "--run-dir", str(run), "--out"],
    }[writer]


WRITERS = ("export", "perplexity", "neurons", "plot")


def write(made, capsys, writer: str, target: Path | str, *extra: str) -> tuple[int, str]:
    code = main([*writer_args(writer, made["run"]), str(target), *extra])
    captured = capsys.readouterr()
    return code, captured.err


def snapshot(*folders: Path) -> dict[str, str]:
    """Every entry of the folders: its kind and, for a file, a hash of its bytes."""
    seen = {}
    for folder in folders:
        for path in sorted(folder.iterdir()):
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
            seen[str(path)] = f"{stat.S_IFMT(st.st_mode)}:{digest}"
    return seen


def refused(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and "unexpected" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("writer", WRITERS)
def test_a_new_file_is_written_and_marked_as_charlms_and_may_be_written_again(made, capsys, tmp_path, writer):
    target = tmp_path / "out.page"
    for _ in range(2):  # the second time, over the file charlm wrote the first time: no --force needed
        code, err = write(made, capsys, writer, target)
        assert code == 0, err
        assert stat.S_ISREG(target.lstat().st_mode) and targets.written_by_charlm(target)
    assert [p.name for p in tmp_path.iterdir()] == ["out.page"]  # no temp left beside it


@pytest.mark.parametrize("writer", WRITERS)
def test_a_users_file_is_replaced_only_with_force(made, capsys, tmp_path, writer):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes", encoding="utf-8")
    code, err = write(made, capsys, writer, notes)
    refused(code, err, "charlm did not write", "--force")
    assert notes.read_text(encoding="utf-8") == "my notes"
    code, err = write(made, capsys, writer, notes, "--force")
    assert code == 0, err
    assert targets.written_by_charlm(notes)


@pytest.mark.parametrize("writer", WRITERS)
def test_an_empty_file_is_replaced_there_is_nothing_to_lose(made, capsys, tmp_path, writer):
    empty = tmp_path / "made-by-mktemp.html"
    empty.touch()
    assert write(made, capsys, writer, empty)[0] == 0
    assert empty.stat().st_size > 0


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("name", [*RUN_FILES, "new-page.html", "loss.html"])
def test_nothing_inside_a_run_folder_even_with_force(made, capsys, writer, name):
    before = snapshot(made["run"])
    for extra in ((), ("--force",)):
        code, err = write(made, capsys, writer, made["run"] / name, *extra)
        refused(code, err, "inside the run folder", "write it outside")
    assert snapshot(made["run"]) == before


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("name", [*MODEL_FILES, "demo.html"])
def test_nothing_inside_a_model_folder_even_with_force(made, capsys, writer, name):
    before = snapshot(made["model"])
    code, err = write(made, capsys, writer, made["model"] / name, "--force")
    refused(code, err, "inside the model folder")
    assert snapshot(made["model"]) == before


@pytest.mark.parametrize("writer", WRITERS)
def test_a_model_folder_is_known_by_its_weights_when_its_config_is_gone(made, capsys, tmp_path, writer):
    copy = tmp_path / "model"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes((made["model"] / "model.safetensors").read_bytes())
    refused(*write(made, capsys, writer, copy / "config.json", "--force"), "inside the model folder")
    assert not (copy / "config.json").exists()


@pytest.mark.parametrize("writer", WRITERS)
def test_a_subfolder_of_a_run_folder_is_inside_it(made, capsys, writer):
    sub = made["run"] / "pages"
    sub.mkdir(exist_ok=True)
    try:
        refused(*write(made, capsys, writer, sub / "page.html"), "inside the run folder")
        assert not any(sub.iterdir())
    finally:
        sub.rmdir()


@pytest.mark.parametrize("writer", WRITERS)
def test_links_are_followed_and_their_target_checked(made, capsys, tmp_path, writer):
    best = made["run"] / "best.pt"
    before = best.read_bytes()
    to_best = tmp_path / "innocent.html"
    to_best.symlink_to(best)
    refused(*write(made, capsys, writer, to_best, "--force"), "inside the run folder")
    assert best.read_bytes() == before and to_best.is_symlink()
    notes = tmp_path / "notes.txt"
    notes.write_text("mine", encoding="utf-8")
    to_notes = tmp_path / "to-notes.html"
    to_notes.symlink_to(notes)
    refused(*write(made, capsys, writer, to_notes), "--force")
    assert notes.read_text(encoding="utf-8") == "mine"
    assert write(made, capsys, writer, to_notes, "--force")[0] == 0
    assert to_notes.is_symlink() and targets.written_by_charlm(notes)  # the file it points to, the link kept
    assert write(made, capsys, writer, to_notes)[0] == 0  # now a file charlm wrote


@pytest.mark.parametrize("writer", WRITERS)
def test_a_link_to_nothing_a_loop_a_folder_or_a_fifo_is_refused(made, capsys, tmp_path, writer):
    dangling = tmp_path / "dangling.html"
    dangling.symlink_to(tmp_path / "elsewhere" / "x.html")
    refused(*write(made, capsys, writer, dangling, "--force"), "does not exist")
    loop = tmp_path / "loop.html"
    loop.symlink_to(loop)
    refused(*write(made, capsys, writer, loop, "--force"), "loop")
    to_folder = tmp_path / "to-folder.html"
    to_folder.symlink_to(tmp_path)
    refused(*write(made, capsys, writer, to_folder, "--force"), "is a folder")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    to_fifo = tmp_path / "to-fifo.html"
    to_fifo.symlink_to(fifo)
    refused(*write(made, capsys, writer, to_fifo, "--force"), "FIFO")
    assert not (tmp_path / "elsewhere").exists() and stat.S_ISFIFO(fifo.lstat().st_mode)
    assert all(p.is_symlink() for p in (dangling, loop, to_folder, to_fifo))


@pytest.mark.parametrize("writer", WRITERS)
def test_a_fifo_a_folder_and_a_missing_folder_are_refused(made, capsys, tmp_path, writer):
    fifo = tmp_path / "pipe.html"
    os.mkfifo(fifo)
    refused(*write(made, capsys, writer, fifo, "--force"), "FIFO", "not a regular file")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    refused(*write(made, capsys, writer, tmp_path, "--force"), "is a folder")
    refused(*write(made, capsys, writer, tmp_path / "no" / "such" / "page.html"), "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.html"]


@pytest.mark.parametrize("writer", WRITERS)
def test_an_unusable_path_is_one_line(made, capsys, tmp_path, writer):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine", encoding="utf-8")
    for target, fragment in (
        (tmp_path / ("a" * 300 + ".html"), "cannot use"),
        (notes / "page.html", "not a folder"),
        ("", "is a folder"),
    ):
        refused(*write(made, capsys, writer, target), fragment)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("writer", WRITERS)
def test_a_device_node_is_refused_before_anything_is_written(made, capsys, tmp_path, writer):
    """A character device made here (never /dev/null: a bug would replace it); as root only."""
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, AttributeError, OSError):
        pytest.skip("making a device node needs root")
    refused(*write(made, capsys, writer, device, "--force"), "a device", "not a regular file")
    assert stat.S_ISCHR(device.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["null"]


@pytest.mark.parametrize("writer", ("export", "perplexity", "neurons"))
def test_the_target_is_checked_before_the_model_is_read(made, capsys, tmp_path, writer):
    """With a run folder that does not exist, the page's refusal is what the user hears: nothing was loaded."""
    code = main([*writer_args(writer, tmp_path / "no-run"), str(made["run"] / "best.pt")])
    refused(code, capsys.readouterr().err, "inside the run folder")


def test_plot_writes_its_own_loss_png_in_the_run_folder_and_nothing_else_there(made, capsys):
    assert main(["plot", "--run-dir", str(made["run"])]) == 0
    assert main(["plot", "--run-dir", str(made["run"])]) == 0  # again: the run's own plot is replaced
    loss = made["run"] / "loss.png"
    assert targets.written_by_charlm(loss)
    capsys.readouterr()
    try:
        refused(*write(made, capsys, "export", loss, "--force"), "inside the run folder")  # a page is not a plot
        other = made["model"] / "loss.png"
        refused(*write(made, capsys, "plot", other), "inside the model folder")
    finally:
        loss.unlink()


def test_a_page_is_not_written_over_the_text_it_reads(made, capsys, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    for command in ("perplexity", "neurons"):
        code = main(
            [
                command,
                "--run-dir",
                str(made["run"]),
                "--device",
                "cpu",
                "--file",
                str(text),
                "--html",
                str(text),
                "--force",
            ]
        )
        refused(code, capsys.readouterr().err, "the file this command reads")
    assert text.read_text(encoding="utf-8") == TEXT


@pytest.mark.parametrize("where", ["run", "model"])
def test_export_out_is_never_inside_a_run_or_model_folder(made, capsys, where):
    before = snapshot(made[where])
    for out in (made[where] / "copy", made[where] / "a" / "b"):
        code = main(["export", "--run-dir", str(made["run"]), "--out", str(out)])
        refused(code, capsys.readouterr().err, f"inside the {where} folder")
    assert snapshot(made[where]) == before


def test_export_out_is_new_or_an_empty_real_folder(made, capsys, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine", encoding="utf-8")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    for out, fragment in (
        (notes, "not a folder"),
        (tmp_path / "pipe", "not a folder"),
        (tmp_path / "link", "symbolic link"),
        (tmp_path, "already exists"),
        (notes / "model", "not a folder"),
    ):
        code = main(["export", "--run-dir", str(made["run"]), "--out", str(out)])
        refused(code, capsys.readouterr().err, fragment)
    assert notes.read_text(encoding="utf-8") == "mine" and not any((tmp_path / "empty").iterdir())
    assert main(["export", "--run-dir", str(made["run"]), "--out", str(tmp_path / "empty")]) == 0
    assert (tmp_path / "empty" / "model.safetensors").is_file() and (tmp_path / "link").is_symlink()


def test_export_refuses_a_page_inside_the_folder_it_creates_before_writing_either(made, capsys, tmp_path):
    out = tmp_path / "model"
    for page in (out / "demo.html", out, out / "sub" / "demo.html"):
        code = main(["export", "--run-dir", str(made["run"]), "--out", str(out), "--html", str(page)])
        refused(code, capsys.readouterr().err)
    code = main(
        [
            "export",
            "--run-dir",
            str(made["run"]),
            "--out",
            str(out),
            "--html",
            str(tmp_path / "d.html"),
            "--precision",
            "int8",
        ]
    )
    refused(code, capsys.readouterr().err, "precision")
    assert not any(tmp_path.iterdir())  # neither the folder nor the page, nor a temp


def test_the_rule_is_one_function_for_the_library_too(made, tmp_path):
    """charlm.export_model (the API) and demo.export_html check as the CLI does."""
    import charlm
    from charlm.errors import UsageError
    from charlm.export.demo import export_html
    from charlm.store.run_dir import RunDir

    with pytest.raises(UsageError, match="inside the run folder"):
        charlm.export_model(made["run"], made["run"] / "model")
    with pytest.raises(UsageError, match="inside the run folder"):
        export_html(RunDir(made["run"]), "best", made["run"] / "best.pt", force=True)
    (tmp_path / "notes.html").write_text("mine", encoding="utf-8")
    with pytest.raises(UsageError, match="--force"):
        export_html(RunDir(made["run"]), "best", tmp_path / "notes.html")


def test_a_legacy_run_folder_without_run_json_is_still_a_run_folder(made, tmp_path, capsys):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("config.yaml", "last.pt"):
        (legacy / name).write_bytes((made["run"] / name).read_bytes())
    refused(*write(made, capsys, "export", legacy / "last.pt", "--force"), "inside the run folder")
    assert (legacy / "last.pt").read_bytes() == (made["run"] / "last.pt").read_bytes()


def test_owned_folder_markers_are_read_boundedly_and_never_from_a_fifo(tmp_path):
    """A run.json or config.json that is a FIFO or huge would hang or fill memory: they are not read."""
    os.mkfifo(tmp_path / "run.json")
    (tmp_path / "config.json").write_bytes(b" " * (targets.CONFIG_LIMIT + 1))
    assert targets.owning_folder(tmp_path) is None
    (tmp_path / "config.json").write_text('{"format": "something else"}')
    assert targets.owning_folder(tmp_path) is None
    (tmp_path / "config.json").write_text('{"format": "charlm-model"}')
    assert targets.owning_folder(tmp_path / "sub") == ("model", tmp_path)
