"""3d Scanner App "All Data" export: per-frame LiDAR depth PNG + confidence PNG + ARKit pose/intrinsics JSON,
rebuilt into one point cloud in the app's world frame (metres), turned z-up."""
from __future__ import annotations

import glob
import json
import os

import numpy as np

from ..core.points import PointCloud
from ..core.errors import InputError


def is_export(path) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "info.json")) and \
        bool(glob.glob(os.path.join(path, "frame_*.json")))


def read_export(path, min_confidence: int = 2, stride: int = 1, max_depth: float = 5.0) -> PointCloud:
    """min_confidence: ARKit confidence 0 (low) .. 2 (high); stride: take every n-th depth pixel in each axis;
    max_depth: iPhone LiDAR is good to about 5 m."""
    from PIL import Image

    frames = sorted(glob.glob(os.path.join(path, "frame_*.json")))
    with open(os.path.join(path, "info.json")) as f:
        info = json.load(f)
    parts, dropped_conf = [], 0
    for fj in frames:
        idx = os.path.basename(fj)[6:-5]
        dpath, cpath = os.path.join(path, f"depth_{idx}.png"), os.path.join(path, f"conf_{idx}.png")
        if not os.path.exists(dpath):
            continue
        with open(fj) as f:
            fr = json.load(f)
        depth = np.asarray(Image.open(dpath), dtype=np.float64) / 1000.0  # millimetres
        conf = np.asarray(Image.open(cpath)) if os.path.exists(cpath) else np.full(depth.shape, 2, np.uint8)
        h, w = depth.shape
        k = np.asarray(fr["intrinsics"], dtype=np.float64).reshape(3, 3)
        # Intrinsics are for the colour image; the depth map is the same view at lower resolution. The colour
        # width is the multiple of 0.5 x depth width nearest 2 cx (1920 for 256-px depth).
        scale = 1.0 / (round(2 * k[0, 2] / w * 2) / 2)
        fx, fy, cx, cy = k[0, 0] * scale, k[1, 1] * scale, k[0, 2] * scale, k[1, 2] * scale
        v, u = np.mgrid[0:h:stride, 0:w:stride]
        d = depth[v, u]
        c = conf[v, u]
        keep = (d > 0) & (d <= max_depth)
        dropped_conf += int((keep & (c < min_confidence)).sum())
        keep &= c >= min_confidence
        u, v, d, c = u[keep] + 0.5, v[keep] + 0.5, d[keep], c[keep]
        # ARKit camera: x right, y up, looking down -z; image v grows downwards.
        cam = np.column_stack([(u - cx) / fx * d, -(v - cy) / fy * d, -d, np.ones_like(d)])
        pose = np.asarray(fr["cameraPoseARFrame"], dtype=np.float64).reshape(4, 4)
        world = cam @ pose.T
        parts.append((world[:, :3], c, np.full(len(d), fr.get("time", 0.0)), np.full(len(d), int(idx), np.uint16)))
    if not parts:
        raise InputError(path, "bad-export", "3d Scanner App export holds no depth frames")
    xyz = np.concatenate([p[0] for p in parts])
    cols = {"x": xyz[:, 0], "y": -xyz[:, 2], "z": xyz[:, 1],  # ARKit world is y-up: make it z-up, right-handed
            "confidence": np.concatenate([p[1] for p in parts]).astype(np.uint8),
            "gps_time": np.concatenate([p[2] for p in parts]),
            "frame": np.concatenate([p[3] for p in parts])}
    meta = {"format": "3dscannerapp", "frames": len(parts), "dropped_low_confidence": dropped_conf,
            "min_confidence": min_confidence, "gnss": {k: info.get(k) for k in ("gpsLatitude", "gpsLongitude",
                                                                                 "gpsAltitude")}}
    return PointCloud(cols, height="local", meta=meta)
