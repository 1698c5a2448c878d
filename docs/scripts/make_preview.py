"""Regenerate docs/images/preview-synthetic.png and preview-synthetic-orbit.png (the pictures of
the "Cameras and exports" guide).

Runs `spatialmem demo` as it ships on test rooms 2 (the demo's default) and 0 (an orbit): the
trained `spann3r_small_synthetic` (the weights in src/spatialmem/weights/) reconstructs 48 frames
of the room online, in overlapping segments (the demo's default, `--segments 6:3`); the
reconstruction, Sim(3)-aligned to the ground truth, is drawn above the ground truth from the
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

IMAGES = Path(__file__).resolve().parents[1] / "images"
# Test room 2 is the demo's default; room 0, an orbit, is shown below it in the guide.
OUTPUTS = {2: IMAGES / "preview-synthetic.png", 0: IMAGES / "preview-synthetic-orbit.png"}


def main() -> None:
    for scene, out in OUTPUTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            printed = StringIO()
            with redirect_stdout(printed):
                spatialmem(
                    ["demo", "--scene", str(scene), "--frames", "48", "--out", tmp, "--json"]
                )
            summary = json.loads(printed.getvalue())
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(summary["files"]["preview"], out)
        metrics = {k: round(summary["metrics"][k], 4) for k in ("acc", "comp", "nc")}
        sys.stdout.write(f"wrote {out} ({summary['model']}, test room {scene}: {metrics})\n")


if __name__ == "__main__":
    main()
