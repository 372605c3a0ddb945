"""Transliterations of Autoscoper's own reading code (BrownBiomechanics/Autoscoper at
203b7213deece3bb1346b3cb5fbc30b37fc28068), statement by statement, so stereodrr's writers are
tested against the consumer and not against stereodrr's readers. Paths and lines cite that
commit. Test helpers only: nothing here is stereodrr's code."""

from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path


class CoordFrame:
    """``libautoscoper/src/CoordFrame.cpp``: ``rotation_`` row-major, its rows the frame's axes in
    world; ``point_to_world_space`` is ``q = rotation_^T p + translation_`` (lines 355-372)."""

    def __init__(self, rotation=None, translation=None):
        self.rotation_ = list(rotation) if rotation is not None else [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
        self.translation_ = list(translation) if translation is not None else [0.0, 0.0, 0.0]

    @staticmethod
    def from_xyzypr(xyzypr):  # lines 100-108
        f = CoordFrame()
        f.rotate(f.rotation_[6:9], xyzypr[3])
        f.rotate(f.rotation_[3:6], xyzypr[4])
        f.rotate(f.rotation_[0:3], xyzypr[5])
        f.translate(xyzypr[:3])
        return f

    @staticmethod
    def from_matrix(m):  # lines 191-199
        return CoordFrame([m[0], m[1], m[2], m[4], m[5], m[6], m[8], m[9], m[10]], [m[12], m[13], m[14]])

    def to_matrix(self):  # lines 201-219
        r, t = self.rotation_, self.translation_
        return [r[0], r[1], r[2], 0.0, r[3], r[4], r[5], 0.0, r[6], r[7], r[8], 0.0, t[0], t[1], t[2], 1.0]

    def rotate(self, caxis, angle):  # lines 262-316
        axis = list(caxis)
        c = math.cos(math.pi * angle / 180.0)
        s = math.sin(math.pi * angle / 180.0)
        mag = math.sqrt(sum(a * a for a in axis))
        if mag == 0:
            return
        x, y, z = (a / mag for a in axis)
        oc = 1.0 - c
        R = [oc * x * x + c, oc * x * y + s * z, oc * x * z - s * y,
             oc * x * y - s * z, oc * y * y + c, oc * y * z + s * x,
             oc * x * z + s * y, oc * y * z - s * x, oc * z * z + c]
        M = self.rotation_
        self.rotation_ = [sum(M[3 * i + k] * R[3 * k + j] for k in range(3)) for i in range(3) for j in range(3)]

    def translate(self, v):
        self.translation_ = [a + b for a, b in zip(self.translation_, v)]

    def inverse(self):  # lines 335-353
        r, t = self.rotation_, self.translation_
        rot = [r[0], r[3], r[6], r[1], r[4], r[7], r[2], r[5], r[8]]
        tr = [-(rot[0] * t[0] + rot[3] * t[1] + rot[6] * t[2]),
              -(rot[1] * t[0] + rot[4] * t[1] + rot[7] * t[2]),
              -(rot[2] * t[0] + rot[5] * t[1] + rot[8] * t[2])]
        return CoordFrame(rot, tr)

    def point_to_world_space(self, p):  # lines 355-372
        r, t = self.rotation_, self.translation_
        return [r[0] * p[0] + r[3] * p[1] + r[6] * p[2] + t[0],
                r[1] * p[0] + r[4] * p[1] + r[7] * p[2] + t[1],
                r[2] * p[0] + r[5] * p[1] + r[8] * p[2] + t[2]]


class AutoscoperCamera:
    """``libautoscoper/src/Camera.cpp``: ``size_``, ``coord_frame_``, ``viewport_``."""

    def __init__(self, path):
        if str(path).rsplit(".", 1)[-1] == "json":  # lines 113-122: a .json file is a VTK camera
            self._load_vtk(json.loads(Path(path).read_text()))
            return
        lines = Path(path).read_text().split("\n")
        if lines[0] == "image size":  # lines 123-134: the first line decides the version
            self._load2(lines)
        else:
            self._load1(lines)

    def _load_vtk(self, doc):  # loadVTKCamera, lines 364-422 (schema and version checks left out)
        self.size_ = [float(doc["image-width"]), float(doc["image-height"])]
        eye, center, up = (list(map(float, doc[k])) for k in ("camera-position", "focal-point", "view-up"))

        def unit(v):
            n = math.sqrt(sum(a * a for a in v))
            return [a / n for a in v]

        def cross(a, b):
            return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]

        forward = unit([c - e for c, e in zip(center, eye)])  # calculateLookAtMatrix, lines 495-512
        side = unit(cross(forward, up))
        perpendicular_up = cross(side, forward)
        rot = side + perpendicular_up + [-f for f in forward]
        self.coord_frame_ = CoordFrame(rot, eye)
        angle = float(doc["view-angle"]) * (math.pi / 180)  # calculateFocalLength, lines 486-493
        fx = self.size_[0] / (2 * math.tan(angle / 2))
        fy = self.size_[1] / (2 * math.tan(angle / 2))
        self.calculate_viewport(self.size_[0] / 2.0, self.size_[1] / 2.0, fx, fy)

    def _load2(self, lines):  # loadMayaCam2, lines 229-345
        K = [[0.0] * 3 for _ in range(3)]
        rotation = [[0.0] * 3 for _ in range(3)]
        translation = [0.0] * 3
        self.size_ = [0.0, 0.0]
        for i, line in enumerate(lines[:17]):
            vals = line.split(",")
            if i == 1:
                self.size_ = [float(vals[0]), float(vals[1])]
            elif 4 <= i <= 6:
                for j in range(3):
                    K[j][i - 4] = float(vals[j])
            elif 9 <= i <= 11:
                for j in range(3):
                    rotation[j][i - 9] = float(vals[j])
            elif 14 <= i <= 16:
                translation[i - 14] = float(line.split()[0])
        # "invert y - axis" (lines 319-326)
        translation[0] = -translation[0]
        translation[2] = -translation[2]
        for i in range(3):
            rotation[i][0] = -rotation[i][0]
            rotation[i][2] = -rotation[i][2]
        K[2][1] = (self.size_[1] - 1) - K[2][1]
        for i in range(3):  # "invert rotation"
            for j in range(i):
                rotation[i][j], rotation[j][i] = rotation[j][i], rotation[i][j]
        translation = [-(translation[0] * rotation[0][i] + translation[1] * rotation[1][i]
                         + translation[2] * rotation[2][i]) for i in range(3)]
        for i in range(3):
            rotation[0][i] = -rotation[0][i]
            rotation[1][i] = -rotation[1][i]
        self.coord_frame_ = CoordFrame([v for row in rotation for v in row], translation)
        self.calculate_viewport(K[2][0], K[2][1], K[0][0], K[1][1])

    def _load1(self, lines):  # loadMayaCam1, lines 140-227
        vals = [[float(x) for x in line.split(",")[:3]] for line in lines[:5]]
        translation, rotation = vals[0], vals[1]
        u0, v0, z = vals[3][0] - 1, vals[3][1] - 1, vals[3][2]
        self.size_ = [vals[4][1] or 1024.0, vals[4][2] or 1024.0]
        xyzypr = [translation[0], translation[1], translation[2], rotation[2], rotation[1], rotation[0]]
        self.coord_frame_ = CoordFrame.from_xyzypr(xyzypr)
        f = -z if z < 0 else z
        self.calculate_viewport(u0, v0, f, f)
        self._principal = (u0, v0, f, f)

    def calculate_viewport(self, cx, cy, fx, fy):  # lines 424-438
        self.viewport_ = [-(2.0 * cx - self.size_[0]) / fx, -(2.0 * cy - self.size_[1]) / fy,
                          2.0 * self.size_[0] / fx, 2.0 * self.size_[1] / fy]
        self._principal = (cx, cy, fx, fy)

    def film_plane(self, world_point):
        """``Tracker::calculate_viewport`` (Tracker.cpp 923-1031): camera space by the inverse
        coordinate frame, then the film plane at z = -2: ``(-2 x / z, -2 y / z)``."""
        c = self.coord_frame_.inverse().point_to_world_space(world_point)
        return -2 * c[0] / c[2], -2 * c[1] / c[2], c[2]

    def texture(self, world_point):
        """Where the radiograph is sampled for that point: ``rad_render_kernel``
        (``gpu/opencl/kernel/RadRenderer.cl`` lines 22-23) with the camera's viewport as the image
        plane (``Tracker.cpp`` 326-328); normalised ``(s, t)``."""
        u, v, _ = self.film_plane(world_point)
        u0, v0, u1, v1 = self.viewport_
        return (u - u0) / u1 + 0.5, 0.5 - (v - v0) / v1


def convert_to_unix_slashes(path: str) -> str:
    """``Trial::convertToUnixSlashes`` (Trial.cpp 152-171): backslashes to slashes, each ``//``
    found scanning forward made ``/``, a trailing slash dropped (not from ``/`` or ``c:/``)."""
    path = path.replace("\\", "/")
    pos = path.find("//")
    while pos != -1:
        path = path[:pos] + "/" + path[pos + 2:]
        pos = path.find("//", pos + 1)
    if len(path) > 1 and path.endswith("/") and not (len(path) == 3 and path[1] == ":"):
        path = path[:-1]
    return path


def parse_trial(text: str, filename: str):
    """``Trial::Trial`` / ``Trial::parse`` / ``Trial::validate`` (Trial.cpp 82-151, 202-300):
    returns the lists, paths made absolute from version 1.1 on."""
    keys = ("mayaCam_csv", "CameraRootDir", "VolumeFile", "VolumeFlip", "VoxelSize", "RenderResolution",
            "OptimizationOffsets", "MeshFile")
    lists = {k: [] for k in keys}
    version = [0, 0]
    for line in io.StringIO(text).read().split("\n"):
        if len(line) == 0 or line[0] == "\n" or line[0] == "#":
            continue
        key, _, value = line.partition(" ")
        if key in ("mayaCam_csv", "CameraRootDir", "VolumeFile"):  # not MeshFile (lines 224-250)
            value = convert_to_unix_slashes(value)
        if key in lists:
            lists[key].append(value)
        elif key == "Version":
            parts = value.split(".")
            version = [int(parts[0]), int(parts[1]) if len(parts) > 1 else 0]
    if version == [0, 0]:
        version = [1, 0]
    if version[0] == 1 and version[1] >= 1:
        base = os.path.dirname(filename)
        for k in ("mayaCam_csv", "CameraRootDir", "VolumeFile", "MeshFile"):
            lists[k] = [v if os.path.isabs(v) else os.path.join(base, v) for v in lists[k]]
    assert len(lists["mayaCam_csv"]) >= 1
    assert len(lists["mayaCam_csv"]) == len(lists["CameraRootDir"])
    assert len(lists["VolumeFile"]) >= 1 and len(lists["VolumeFile"]) == len(lists["VoxelSize"])
    return version, lists


def volume_flips(value: str) -> tuple[int, int, int]:
    """``Trial::loadVolumes`` (Trial.cpp 333-337): ``volume_flip >> flip_x >> flip_y >> flip_z``
    into zeros; an extraction that fails leaves its value (and the later ones) 0."""
    flips = [0, 0, 0]
    for k, token in enumerate(value.split()[:3]):
        m = re.match(r"[+-]?\d+", token)
        if m is None:
            break
        flips[k] = int(m.group(0))
        if m.end() != len(token):  # the stream stops inside this token
            break
    return flips[0], flips[1], flips[2]


def video_files(dirname):
    """``Video::Video`` (Video.cpp 66-105): not starting with '.', extension starting with
    ``tif``, sorted."""
    names = []
    for name in os.listdir(dirname):
        if name.startswith("."):
            continue
        ext = name[name.rfind(".") + 1:]
        if ext[:3] != "tif":
            continue
        names.append(dirname + "/" + name)
    return sorted(names)


def volume_sample_index(width, height, depth, scale, flips, data_nonzero_bounds, obj):
    """The continuous voxel index ``(i, j, k)`` of the (flipped) volume that the ray caster samples
    at object-space point ``obj`` (mm): ``VolumeDescription`` (lines 139-256: crop, invScale,
    invTrans), ``RayCaster::setInvModelView`` (RayCaster.cpp 92-150: ``p = o * invScale +
    invTrans``) and ``volume_render_kernel`` (RayCaster.cl line 64: normalised texture
    coordinate ``(p.x, 1 - p.y, -p.z)`` of the cropped volume, texel centres at half-integers)."""
    mn, mx = data_nonzero_bounds  # min/max (x, y, z) index of nonzero voxels after flipping
    dim = [mx[a] - mn[a] + 1 for a in range(3)]
    inv_scale = [1.0 / (scale[a] * dim[a]) for a in range(3)]
    inv_trans = [-mn[0] / dim[0], -((height - mx[1] - 1) / dim[1]), mn[2] / dim[2]]
    p = [obj[a] * inv_scale[a] + inv_trans[a] for a in range(3)]
    tex = [p[0], 1.0 - p[1], -p[2]]
    return [tex[a] * dim[a] - 0.5 + mn[a] for a in range(3)]


def save_tracking_results(frames, path, save_as_matrix=True, save_as_rows=True, save_with_commas=True):
    """``AutoscoperMainWindow::save_tracking_results`` (lines 736-833) for one volume: ``frames``
    are ``xyzypr`` lists or ``None`` (untracked); fixed notation with 16 decimals."""
    s = "," if save_with_commas else " "
    out = []
    for xyzypr in frames:
        if xyzypr is None:
            out.append(s.join(["NaN"] * (16 if save_as_matrix else 6)))
            continue
        if save_as_matrix:
            m = CoordFrame.from_xyzypr(xyzypr).to_matrix()
            order = [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15] if save_as_rows else list(range(16))
            out.append(s.join(f"{m[i]:.16f}" for i in order))
        else:
            out.append(s.join(f"{v:.16f}" for v in xyzypr))
    Path(path).write_text("\n".join(out) + "\n")


def load_tracking_results(path, num_frames, n_volumes=1, save_as_matrix=True, save_as_rows=True,
                          save_with_commas=True):
    """``AutoscoperMainWindow::load_tracking_results`` (lines 984-1106): per frame and volume the
    ``CoordFrame`` it inserts (None where the row is skipped as NaN)."""
    s = "," if save_with_commas else " "
    lines = Path(path).read_text().split("\n")
    result = []
    for i in range(min(num_frames, len(lines))):
        values = lines[i].split(s)
        pos = 0
        row = []
        for _ in range(n_volumes):
            n = 16 if save_as_matrix else 6
            cell = values[pos:pos + n]
            pos += n
            if not cell or cell[-1][:3] == "NaN":
                row.append(None)
                continue
            m = [float(v) for v in cell]
            if save_as_matrix and save_as_rows:
                n_ = list(m)
                m[1], m[2], m[3] = n_[4], n_[8], n_[12]
                m[4], m[6], m[7] = n_[1], n_[9], n_[13]
                m[8], m[9], m[11] = n_[2], n_[6], n_[14]
                m[12], m[13], m[14] = n_[3], n_[7], n_[11]
            row.append(CoordFrame.from_matrix(m) if save_as_matrix else CoordFrame.from_xyzypr(m))
        result.append(row)
    return result
