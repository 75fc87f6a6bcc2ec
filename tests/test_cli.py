"""The CLI explains itself: help with a purpose and examples, "did you mean" for flags, model names in any
case, --json documents for export and verify, one size format, file permissions, the demo's quiet
handling of closed connections. Cheap: nothing here trains or exports."""

import io
import json
import os
import stat
import sys

import pytest

from mnist_edge import files as mio
from mnist_edge.cli import COMMANDS, build_parser, main
from mnist_edge.documents import EXPORT_SCHEMA, VERIFY_SCHEMA
from mnist_edge.zoo.registry import get_spec


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_purpose_a_description_and_examples(capsys, command):
    text = _help(capsys, command)
    usage, _, rest = text.partition("\n\n")
    assert usage.startswith(f"usage: mnist-edge {command}")
    purpose = rest.split(". ")[0]
    assert 15 < len(purpose) < 100 and purpose[0].isupper()  # one line saying what it is for
    examples = text.split("examples:\n")[1].strip().splitlines()
    assert 1 <= len(examples) <= 3 and all(e.strip().startswith(f"mnist-edge {command}") for e in examples)
    sub = build_parser()._command_parsers[command]
    assert sub.description and len(sub.description) > len(purpose) + 20  # a description beyond the purpose


def test_top_level_help_speaks_to_users(capsys):
    text = _help(capsys)
    assert "argparse" not in text and "thin" not in text
    assert "classify" in text and "mnist-edge predict" in text and "COMMAND --help" in text


def test_examples_in_help_parse(capsys):
    """Every example line is a valid command line for its parser (no stale flags in the help)."""
    parser = build_parser()
    for command, sub in parser._command_parsers.items():
        for line in (sub.epilog or "").split("examples:\n")[1].strip().splitlines():
            argv = line.split()[1:]
            parser.parse_args(argv)  # SystemExit(2) on a flag the command does not have


@pytest.mark.parametrize("argv, suggestion", [
    (["export", "--model", "bn_cnn", "--quantise"], "did you mean --quantize?"),
    (["bench", "--treads", "1"], "did you mean --threads?"),
    (["verify", "exported/bn_cnn", "--hash-only"], "did you mean --hashes-only?"),
])
def test_a_mistyped_flag_gets_did_you_mean(capsys, argv, suggestion):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and suggestion in err
    assert err.startswith(f"usage: mnist-edge {argv[0]}")  # the command's own usage line


def test_model_names_are_matched_case_insensitively(capsys):
    assert get_spec("BN_CNN").name == "bn_cnn" and get_spec("LeNet5").name == "lenet5"
    with pytest.raises(Exception, match="Did you mean 'lenet5'"):
        get_spec("LENET")
    from mnist_edge.bench.runner import resolve_folder

    assert resolve_folder("BN_CNN").name == "bn_cnn"  # the committed exported/bn_cnn


def test_one_size_format():
    assert [mio.format_size(n) for n in (0, 1023, 1024, 118_900, 2_205_000, None)] == [
        "0 B", "1023 B", "1.0 KiB", "116.1 KiB", "2.1 MiB", "-"]


def test_files_written_atomically_get_the_usual_permissions(tmp_path):
    """train's checkpoint and curves go through atomic_path: 0644 under umask 022, as export's files."""
    old = os.umask(0o022)
    try:
        mio.write_text_atomic(tmp_path / "a.txt", "x")
        with mio.atomic_path(tmp_path / "b.pt") as tmp:
            tmp.write_bytes(b"weights")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE(plain.stat().st_mode)
    assert want == 0o644
    for name in ("a.txt", "b.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want


def test_verify_json_document_on_success_and_failure(model_dir, tmp_path, capsys):
    out = tmp_path / "v.json"
    assert main(["verify", str(model_dir), "--hashes-only", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == VERIFY_SCHEMA and doc["ok"] is True and doc["model"] == "bn_cnn"
    assert {f["file"] for f in doc["files"]} >= {"model.onnx", "model.int8.onnx"}
    assert "verified bn_cnn" in capsys.readouterr().out  # the table too
    assert main(["verify", str(tmp_path), "--hashes-only", "--json", "-"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # stdout is the document alone
    assert doc["schema"] == VERIFY_SCHEMA and doc["ok"] is False and "manifest.json" in doc["error"]
    assert captured.err.startswith("mnist-edge verify: error: ")


def test_export_json_document_on_failure(tmp_path, capsys):
    out = tmp_path / "e.json"
    code = main(["export", "--model", "MLP", "--checkpoint", str(tmp_path / "absent.pt"), "--out",
                 str(tmp_path / "mlp"), "--json", str(out)])
    assert code == 1
    doc = json.loads(out.read_text())
    assert doc["schema"] == EXPORT_SCHEMA and doc["ok"] is False and doc["model"] == "mlp"
    assert "absent.pt" in doc["error"] and not (tmp_path / "mlp").exists()


def test_export_document_lists_files_and_checks():
    from mnist_edge.evaluate.gates import Check
    from mnist_edge.exporter.pipeline import ExportResult
    from mnist_edge.documents.commands import export_document

    manifest = {"files": {"model.onnx": {"size": 10, "sha256": "ab" * 32, "accuracy": 99.0, "agreement": 100.0,
                                         "max_abs_diff": 1e-6, "reference": "pytorch", "extra": 1}},
                "pytorch": {"accuracy": 99.0}, "settings": {"opset": 18}, "evaluation": {"images": 10}}
    checks = [Check("model.onnx", 1, "max_abs_diff", 1e-6, "<=", 1e-4)]
    doc = export_document(ExportResult(model="mlp", out=mio.Path("exported/mlp"), manifest=manifest,
                                       checks=checks, seconds=1.23456))
    assert doc["schema"] == EXPORT_SCHEMA and doc["ok"] is True and doc["seconds"] == 1.235
    assert doc["files"]["model.onnx"] == {k: v for k, v in manifest["files"]["model.onnx"].items() if k != "extra"}
    assert doc["checks"] == [{"artifact": "model.onnx", "batch_size": 1, "metric": "max_abs_diff", "value": 1e-6,
                              "op": "<=", "limit": 1e-4, "passed": True}]
    json.dumps(doc)  # JSON-ready


def test_demo_server_prints_no_traceback_when_a_browser_hangs_up(tmp_path, capsys):
    from mnist_edge.demo import DemoServer

    server = DemoServer(("127.0.0.1", 0), web_dir=tmp_path, ort_dist=tmp_path, model_dir=tmp_path,
                        index={}, blobs={}, quiet=True)
    try:
        for exc in (ConnectionResetError(104, "Connection reset by peer"), BrokenPipeError(32, "Broken pipe")):
            try:
                raise exc
            except OSError:
                server.handle_error(None, ("127.0.0.1", 50000))
        assert capsys.readouterr().err == ""
        stderr, sys.stderr = sys.stderr, io.StringIO()
        try:
            try:
                raise ValueError("a real bug")
            except ValueError:
                server.handle_error(None, ("127.0.0.1", 50000))
            shown = sys.stderr.getvalue()
        finally:
            sys.stderr = stderr
        assert "ValueError: a real bug" in shown  # real errors still show
    finally:
        server.server_close()
