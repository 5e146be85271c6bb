"""``unmask generate`` and ``unmask convert`` on tiny saved checkpoints, through ``unmask.cli.main``."""

import io
import json
import re

import pytest

import model_fixtures as mf
import unmask.cli as cli


@pytest.fixture(autouse=True)
def only_model_commands(monkeypatch):
    # the parser imports every command module; these tests need only the two defined here
    monkeypatch.setattr(cli, "COMMANDS", ("generate", "convert"))


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_prints_text_and_cost(capsys):
    code, out, err = run(capsys, "generate", "--model", str(mf.dream_small()), "--gen-length", "16", "--block-length", "8",
                         "--cache", "dual", "--planner", "dilated(base=2)", "--stop", "zzz", "hello world", "the cat")
    assert code == 0, err
    assert "--- [0] hello world" in out and "--- [1] the cat" in out
    assert "NFE 6, 2 full + 4 cached" in out and "tokens/s" in out


def test_generate_reads_file_and_stdin_and_shows_order(capsys, tmp_path, monkeypatch):
    f = tmp_path / "prompts.txt"
    f.write_text("hello\n\nthe cat sat\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("what is 2+2 ?\n"))
    code, out, err = run(capsys, "generate", "--model", str(mf.llada_small()), "--gen-length", "8", "--block-length", "8",
                         "--file", str(f), "--show-order", "-")
    assert code == 0, err
    assert out.count("--- [") == 3 and "--- [0] what is 2+2 ?" in out and "--- [2] the cat sat" in out
    assert out.count("reveal order") == 3 and "call:" in out


def test_generate_writes_the_html_replay_and_the_png(capsys, tmp_path):
    html, png = tmp_path / "order.html", tmp_path / "order.png"
    code, out, err = run(capsys, "generate", "--model", "tiny-arith", "--gen-length", "32", "--block-length", "32",
                         "--html", str(html), "--png", str(png), "Q:15*8-43;", "Q:7+5+9;")
    assert code == 0, err
    page = html.read_text()
    assert "Q:15*8-43;" in page and "Q:7+5+9;" in page
    assert page.count("(5 calls)") == 2 and not re.search(r"calls\)? *<span class='calls'>", page)  # stated once
    assert "http" not in page.replace("http-equiv", "")  # self-contained: no external assets
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {html}" in " ".join(out.split())


def test_chat_template_is_applied_unless_disabled(capsys):
    args = ["generate", "--model", str(mf.dream_small()), "--gen-length", "8", "--block-length", "8", "hello"]
    assert run(capsys, *args)[0] == 0
    assert run(capsys, *args, "--no-chat-template")[0] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/ckpt", "hi"], "model path '/nonexistent/ckpt' does not exist"),
        (["--planner", "greedy", "hi"], "planner must be one of"),
        (["--gen-length", "128", "--block-length", "8", "hello world"], "over the model's maximum length 128"),
        ([], "give at least one prompt"),
        (["--file", "/nonexistent/prompts.txt"], "--file '/nonexistent/prompts.txt' does not exist"),
        (["--html", "/nonexistent/dir/x.html", "hi"], "--html '/nonexistent/dir/x.html': its folder does not exist"),
    ],
)
def test_errors_are_one_line_without_traceback(capsys, args, message):
    argv = ["generate", *(["--model", str(mf.llada_small())] if "--model" not in args else []), *args]
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in err


def test_convert_command_writes_a_loadable_checkpoint(capsys, tmp_path):
    dst = tmp_path / "converted"
    code, out, err = run(capsys, "convert", str(mf.llada_small()), str(dst), "--dtype", "bfloat16")
    assert code == 0, err
    assert "wrote" in out
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["unmask_family"] == "llada" and cfg["dtype"] == "bfloat16"
    code, out, err = run(capsys, "generate", "--model", str(dst), "--gen-length", "8", "--block-length", "8", "hello")
    assert code == 0, err
    code, out, err = run(capsys, "convert", str(mf.llada_small()), str(dst))
    assert code == 2 and "exists and is not empty" in " ".join(err.split())


def test_default_gen_length_fits_the_model_and_says_so(capsys):
    code, out, err = run(capsys, "generate", "--model", "tiny-arith", "Q:12+34;")
    assert code == 0, err
    text = " ".join(out.split())
    assert "--gen-length 32: the default 128 does not fit the model's maximum length 64 after a 8-token prompt" in text
    assert "1 x 32 positions" in text and "A:" in text
