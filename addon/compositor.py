"""Relit EXR sequences in the compositor: an Image node per result, playing in step with the timeline.

Blender 5.0 keeps the compositor in a node group (`scene.compositing_node_group`, output = the group's
Image output); 4.5 in `scene.node_tree` with a Composite node. An Image node shows file number
`t - frame_start + 1 + frame_offset` of a sequence at timeline frame t, and the engine numbers its files by
source frame, so `frame_start` = the strip's first frame and `frame_offset` = its first file number - 1.
"""

from __future__ import annotations

import os
import re

import bpy

_NUMBER = re.compile(r"(\d+)(?=\.[A-Za-z]+$)")


def compositor_tree(scene) -> tuple:
    """(the scene's compositor node tree, whether it was made just now). 4.5 makes its default tree
    (Render Layers -> Composite) when compositing is switched on; 5.0 an empty node group."""
    if hasattr(scene, "compositing_node_group"):  # 5.0
        tree = scene.compositing_node_group
        if tree is None:
            tree = bpy.data.node_groups.new(f"{scene.name} Compositing", "CompositorNodeTree")
            scene.compositing_node_group = tree
            return tree, True
        return tree, False
    fresh = not scene.use_nodes or scene.node_tree is None
    scene.use_nodes = True
    return scene.node_tree, fresh


def is_legacy() -> bool:
    """Whether this Blender has 4.5's compositor (`scene.node_tree`, a Composite node, MixRGB, settings as
    node properties) rather than 5.0's (a node group, Mix, settings as input sockets)."""
    return hasattr(bpy.types, "CompositorNodeComposite")


def output_socket(tree):
    """The input socket that is the compositor's result (made when missing)."""
    if is_legacy():  # 4.5
        node = next((n for n in tree.nodes if n.bl_idname == "CompositorNodeComposite"), None)
        if node is None:
            node = tree.nodes.new("CompositorNodeComposite")
            node.location = (400, 0)
        return node.inputs[0]
    node = next((n for n in tree.nodes if n.bl_idname == "NodeGroupOutput"), None)
    if not any(getattr(i, "in_out", "") == "OUTPUT" for i in tree.interface.items_tree):
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    if node is None:
        node = tree.nodes.new("NodeGroupOutput")
        node.location = (400, 0)
    return node.inputs[0]


def file_number(path: str) -> int:
    """The frame number Blender reads from an image sequence file name (its last digit group)."""
    m = _NUMBER.search(os.path.basename(path))
    return int(m.group(1)) if m else 0


def time_image_node(node, first_file: str, timeline_start: int, n_frames: int) -> None:
    """Time a compositor Image node showing an image sequence that starts with `first_file`: timeline frame
    `timeline_start + k` shows file number `file_number(first_file) + k` (k < n_frames; a single file is
    held)."""
    node.frame_start, node.frame_duration = int(timeline_start), max(1, int(n_frames))
    node.frame_offset = file_number(first_file) - 1


def show_in_compositor(scene, name: str, image, first_file: str, timeline_start: int, n_frames: int):
    """Put `image` (an EXR sequence) in an Image node `name` of the scene's compositor, timed so that
    timeline frame `timeline_start + k` shows file number `file_number(first_file) + k` for k < n_frames
    (a single file is held). The node is linked to the compositor's output when that is still free or the
    tree was made just now, so an artist's comp is never rewired. Returns the node."""
    tree, fresh = compositor_tree(scene)
    node = tree.nodes.get(name)
    if node is None or node.bl_idname != "CompositorNodeImage":
        node = tree.nodes.new("CompositorNodeImage")
        node.name = node.label = name
    node.image = image
    time_image_node(node, first_file, timeline_start, n_frames)
    out = output_socket(tree)
    if fresh or not out.is_linked:
        tree.links.new(node.outputs[0], out)
    return node
