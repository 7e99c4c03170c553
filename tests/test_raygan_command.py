"""The `raygan` console command: every subcommand's --help is its reference, a mistyped
command or family is one line with a suggestion, `raygan check` reports each item, and the
bash completion lists what a user can type. In process (raygan.cli.main), no Ray."""
import json
import subprocess

import pytest

from raygan import cli

FAMILIES = ["dagan", "dequantizer", "facesr", "pan", "wcdgan"]


def run(capsys, *argv):
    try:
        status = cli.main(list(argv))
    except SystemExit as exc:  # argparse's --help and usage errors
        status = exc.code
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.mark.parametrize("argv", [[c, "--help"] for c in cli.COMMANDS if c not in ("completion",)]
                         + [["train", f, "--help"] for f in FAMILIES]
                         + [["shards", k, "--help"] for k in cli.SHARDS])
def test_every_command_has_its_reference_in_help(capsys, argv):
    status, out, err = run(capsys, *argv)
    assert status == 0 and err == "", err
    assert "usage: raygan " + " ".join(argv[:-1]) in out, out[:300]
    if argv[0] == "train" and len(argv) == 3:  # a family's options, as the job script has them
        for option in ("--data", "--storage", "--workers", "--resume", "--check"):
            assert option in out, option


def test_the_top_level_help_lists_every_command(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0 and all(f"  {c} " in out for c in cli.COMMANDS)
    status, _, err = run(capsys)  # no command: the same text, as an error
    assert status == 2 and "usage: raygan <command>" in err


@pytest.mark.parametrize("argv, words", [
    (["trian"], "unknown command 'trian' (did you mean 'train'?)"),
    (["train", "wcdgn"], "unknown family 'wcdgn' (did you mean 'wcdgan'?)"),
    (["shards", "foldr"], "unknown kind 'foldr'"),
    (["completion", "zsh"], "usage: raygan completion bash"),
])
def test_a_mistyped_command_is_one_line_with_a_suggestion(capsys, argv, words):
    status, _, err = run(capsys, *argv)
    assert status == 2 and words in err.splitlines()[0], err


def test_check_reports_every_item(capsys, tmp_path):
    status, out, _ = run(capsys, "check", "--json", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    items = json.loads(out.strip().splitlines()[-1])
    assert status == 0 and all(i["status"] in ("ok", "warn") for i in items), items
    text = [i["item"] for i in items]
    for start in ("raygan ", "devices: ", "families: dagan, dequantizer, facesr, pan, wcdgan", "VGG19",
                  "AlexNet", "MLflow: sqlite:///", "Ray: "):
        assert any(t.startswith(start) for t in text), (start, text)
    # a model that does not resolve is a failed item, status 1, never a traceback
    status, out, err = run(capsys, "check", "--model", str(tmp_path / "nope"),
                           "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    fail = [line for line in out.splitlines() if line.startswith("fail")]
    assert status == 1 and len(fail) == 1 and "nope" in fail[0] and "Traceback" not in out + err


def test_bash_completion_completes_commands_and_families(capsys):
    status, script, _ = run(capsys, "completion", "bash")
    assert status == 0
    done = subprocess.run(["bash", "-c", script + '\nCOMP_WORDS=(raygan tr); COMP_CWORD=1; _raygan; '
                           'echo "${COMPREPLY[@]}"; COMP_WORDS=(raygan train w); COMP_CWORD=2; _raygan; '
                           'echo "${COMPREPLY[@]}"'], capture_output=True, text=True, timeout=30)
    assert done.stdout.split("\n")[:2] == ["train", "wcdgan"], (done.stdout, done.stderr)
