"""The long kill -9 soak (issue 7): tests/soak/test_kill9.py with many more kills.  Prints the
counts; fails if an acknowledged message is ever missing or doubled.

    .venv/bin/python bench/soak.py                 # 200 kills
    .venv/bin/python bench/soak.py --kills 1000 --seed 1234
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    env = {**os.environ, "OURMAIL_SOAK_KILLS": str(args.kills)}
    if args.seed:
        env["OURMAIL_SOAK_SEED"] = str(args.seed)
    test = str(REPO / "tests" / "soak" / "test_kill9.py")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", test], env=env, cwd=REPO)
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
