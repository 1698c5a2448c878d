"""Regenerate docs/images/preview-synthetic.png (the picture of the "Cameras and exports" guide).

Runs `spatialmem demo` as it ships: the trained `spann3r_small_synthetic` (the weights in
src/spatialmem/weights/) reconstructs 48 frames of test room 0 of spatialmem.data.rooms online;
the reconstruction, Sim(3)-aligned to the ground truth, is drawn above the ground truth from the
same viewpoints by spatialmem.viz.render_preview. Run it after replacing the shipped weights:

    python docs/scripts/make_preview.py
"""

import json
import shutil
import sys
import tempfile
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

from spatialmem.cli import main as spatialmem

OUT = Path(__file__).resolve().parents[1] / "images" / "preview-synthetic.png"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        printed = StringIO()
        with redirect_stdout(printed):
            spatialmem(["demo", "--scene", "0", "--frames", "48", "--out", tmp, "--json"])
        summary = json.loads(printed.getvalue())
        OUT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(summary["files"]["preview"], OUT)
    metrics = {k: round(summary["metrics"][k], 4) for k in ("acc", "comp", "nc")}
    sys.stdout.write(f"wrote {OUT} ({summary['model']}, test room 0: {metrics})\n")


if __name__ == "__main__":
    main()
