"""Reading and writing reconstructions: point clouds, per-frame archives, cameras.

- PLY point clouds: [`write_ply`][spatialmem.io.write_ply], [`read_ply`][spatialmem.io.read_ply].
- Per-frame ``.npz`` archives: [`save_frames_npz`][spatialmem.io.save_frames_npz],
  [`load_frames_npz`][spatialmem.io.load_frames_npz].
- Nerfstudio ``transforms.json``: [`write_nerfstudio`][spatialmem.io.write_nerfstudio],
  [`read_nerfstudio`][spatialmem.io.read_nerfstudio].
- COLMAP text models: [`write_colmap_text`][spatialmem.io.write_colmap_text],
  [`read_colmap_text`][spatialmem.io.read_colmap_text].
- All of them into one folder: [`write_reconstruction`][spatialmem.io.write_reconstruction].

Cameras are ``K [T, 3, 3]`` and camera-to-world ``cam_to_world [T, 4, 4]`` with OpenCV axes
(x right, y down, z forward), pixel centres at ``+0.5``; the writers convert to each format's
convention and the readers convert back.
"""

from spatialmem.io.colmap import ColmapModel, read_colmap_text, write_colmap_text
from spatialmem.io.frames import load_frames_npz, save_frames_npz
from spatialmem.io.nerfstudio import NerfstudioScene, read_nerfstudio, write_nerfstudio
from spatialmem.io.ply import PointCloud, read_ply, write_ply
from spatialmem.io.reconstruction import write_reconstruction

__all__ = [
    "ColmapModel",
    "NerfstudioScene",
    "PointCloud",
    "load_frames_npz",
    "read_colmap_text",
    "read_nerfstudio",
    "read_ply",
    "save_frames_npz",
    "write_colmap_text",
    "write_nerfstudio",
    "write_ply",
    "write_reconstruction",
]
