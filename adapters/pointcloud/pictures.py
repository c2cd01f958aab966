"""Pictures of point-cloud reconstructions (3D scatter plots) and reconstructions written as coloured ``.ply``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d
import torch
from PIL import Image

from mimsdk.adapters.pointcloud.options import AXES, group_needs
from mimsdk.config import ModelConfig


def _views(recon: dict[str, torch.Tensor], model: ModelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample, from ``MaskedAutoencoder.reconstruct``: grouped points with masked groups at their
    centres, the reconstruction (B×G×K×3 each) and the mask B×G (1 = masked).

    ``untokenize`` adds each group's centre, so the "mask" entry is centre + (0 or 1); the centre
    is the first point of each group in "masked" (a centre is its own nearest neighbour, and a
    masked group is zeroed to its centre), which gives the mask back.
    """
    groups, group_size = group_needs(model)
    shape = (-1, groups, group_size, 3)
    masked = recon["masked"].detach().float().cpu().reshape(shape)
    centres = masked[:, :, :1]
    mask = (recon["mask"].detach().float().cpu().reshape(shape) - centres).mean(dim=(2, 3)).round().clamp(0, 1)
    pred = recon["reconstruction"].detach().float().cpu().reshape(shape)
    return masked.numpy(), pred.numpy(), mask.numpy()


def picture(
    recon: dict[str, torch.Tensor], model: ModelConfig, max_samples: int = 4, up_axis: str = "y"
) -> Image.Image:
    """Rows of samples; columns input | visible groups | reconstruction (masked groups predicted, in red).

    3D scatter plots through matplotlib's Agg backend, viewed from the same angle.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    visible, pred, mask = _views(recon, model)
    inputs = recon["input"].detach().float().cpu().numpy()
    rows = min(max_samples, inputs.shape[0])
    fig = Figure(figsize=(9, 3 * rows), dpi=80)
    FigureCanvasAgg(fig)
    up = AXES[up_axis]
    order = [i for i in range(3) if i != up] + [up]  # matplotlib's z is up
    for r in range(rows):
        shown = mask[r] < 0.5
        panels = [
            ("input", [(inputs[r], "tab:blue")]),
            ("visible groups", [(visible[r][shown].reshape(-1, 3), "tab:gray")]),
            (
                "reconstruction",
                [(visible[r][shown].reshape(-1, 3), "tab:gray"), (pred[r][~shown].reshape(-1, 3), "tab:red")],
            ),
        ]
        for c, (title, clouds) in enumerate(panels):
            ax = fig.add_subplot(rows, 3, 3 * r + c + 1, projection="3d")
            for points, colour in clouds:
                if len(points):
                    p = points[:, order]
                    ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=1.5, c=colour, depthshade=False)
            ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
            ax.view_init(elev=20, azim=-60)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())


def write_ply(points: torch.Tensor | np.ndarray, path: str | Path, colours: np.ndarray | None = None) -> Path:
    """Write P×3 points (and optional P×3 colours in [0, 1]) as a ``.ply`` through open3d."""
    path = Path(path)
    cloud = o3d.geometry.PointCloud()
    array = points.detach().float().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    cloud.points = o3d.utility.Vector3dVector(array.reshape(-1, 3).astype(np.float64))
    if colours is not None:
        cloud.colors = o3d.utility.Vector3dVector(np.asarray(colours, dtype=np.float64).reshape(-1, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not o3d.io.write_point_cloud(str(path), cloud):
        raise OSError(f"open3d could not write {path}")
    return path


def write_reconstruction(recon: dict[str, torch.Tensor], model: ModelConfig, folder: str | Path) -> list[Path]:
    """One ``.ply`` per sample: visible groups grey, predicted masked groups red."""
    visible, pred, mask = _views(recon, model)
    paths = []
    for i in range(visible.shape[0]):
        shown = mask[i] < 0.5
        points = np.concatenate([visible[i][shown].reshape(-1, 3), pred[i][~shown].reshape(-1, 3)])
        colours = np.zeros_like(points)
        colours[: shown.sum() * visible.shape[2]] = 0.5
        colours[shown.sum() * visible.shape[2] :] = [0.85, 0.1, 0.1]
        paths.append(write_ply(points, Path(folder) / f"reconstruction_{i}.ply", colours))
    return paths
