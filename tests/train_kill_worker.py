"""Runs training/train.py's main() and SIGKILLs its own process right after step `--kill_after_step` is logged, so that
tests/test_train.py can resume a run that died without any chance to clean up (no atexit, no finally)."""

import os
import signal
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO]  # this checkout's code first
sys.path.insert(1, os.path.join(REPO, "training"))  # the training scripts, imported by name

import train  # noqa: E402


def main(argv: list[str]) -> None:
    kill_after = None
    if "--kill_after_step" in argv:
        at = argv.index("--kill_after_step")
        kill_after = int(argv[at + 1])
        del argv[at : at + 2]
    log_step = train.log_step

    def log_then_maybe_die(accelerator, path, record, report):
        log_step(accelerator, path, record, report)
        if kill_after is not None and record["step"] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    train.log_step = log_then_maybe_die
    train.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
