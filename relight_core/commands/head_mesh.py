"""`relight-core head-mesh`: the tracked head of an analysis as animated geometry (PC2 cache + rest mesh)."""

from __future__ import annotations

import argparse

NAME = "head-mesh"
HELP = ("Write the tracked head of an analysis (.npz) as a deforming mesh: head_mesh.pc2 (one sample per "
        "frame, for Blender's Mesh Cache modifier) and head_mesh.npz (rest mesh, camera track).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `head-mesh`."""
    parser.add_argument("analysis", metavar="ANALYSIS",
                        help="analysis file written by `relight-core analyze`")
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="folder for head_mesh.pc2 and head_mesh.npz")


def run(args: argparse.Namespace) -> int:
    """Load the analysis, write the head mesh, print a summary."""
    from pathlib import Path

    from relight_core import headmesh, track
    from relight_core.errors import UserError

    path = Path(args.analysis)
    if not path.is_file():
        raise UserError(f"Analysis file {path} does not exist; write one with `relight-core analyze`.")
    summary = headmesh.export_head(track.Analysis.load(str(path)), args.output)
    print(f"head-mesh: {summary['frames']} frame(s), {summary['vertices']} vertices, {summary['faces']} "
          f"faces, shell scale {summary['shell_scale'][0]:g} x {summary['shell_scale'][1]:g}, "
          f"{summary['metres_per_unit']:.3f} m per head unit at real scale -> {summary['pc2']}, "
          f"{summary['rest']}")
    return 0
