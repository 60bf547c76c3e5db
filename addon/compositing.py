"""CG in the shot: the tracked head as holdout and shadow catcher, and the compositor trees.

"Set Up Compositor" (`portrait_relight.setup_pass_compositor`) loads the strip's relit multilayer EXR
frames on an Image node (each engine pass a socket: albedo, shading, specular, shadow, N, P, Pref, depth,
matte, id_*) and rebuilds the beauty as albedo x shading + specular with the matte as alpha.

"Set Up CG Composite" (`portrait_relight.setup_cg_composite`) makes the tracked head mesh (built by Track)
a Cycles shadow catcher, which in Cycles is also a holdout: CG behind the head is hidden by it, and the
shadows that CG objects cast on it go to the Shadow Catcher pass (1 = unshadowed, lower in shadow),
while the head itself stays out of the Combined pass (transparent film). The compositor group then
multiplies the plate (the relit strip when there is one, else the footage: a frame-aligned MovieClip,
scaled to the render size) by the Shadow Catcher pass and lays the CG render over it (Alpha Over).
The view transform is set to Standard so that the plate comes out as it went in.
"""

from __future__ import annotations

import os

import bpy

from . import compositor, scene3d, sequencer

CG_GROUP = "Portrait Relight CG"


def make_head_catcher(head) -> None:
    """The head mesh as shadow catcher (and with it holdout of CG behind it) in Cycles."""
    head.is_shadow_catcher = True
    head.is_holdout = False  # a holdout object would also drop the shadows it catches
    head.visible_shadow = True


def configure_render(scene) -> None:
    """Cycles, transparent film, the Shadow Catcher pass on every view layer, Standard view transform; the
    sequencer off for this scene's render (a scene holding strips renders them instead of its 3D view; the
    plate comes in through the compositor)."""
    scene.render.engine = "CYCLES"
    scene.render.use_sequencer = False
    scene.render.use_compositing = True
    scene.render.film_transparent = True
    for layer in scene.view_layers:
        layer.cycles.use_pass_shadow_catcher = True
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"


def plate_clip(context, strip):
    """The plate for the composite: the strip's relit frames ("<name> relit" image strip) when they exist,
    else its footage, as a MovieClip frame-aligned with the strip."""
    seq_scene = sequencer.sequencer_scene(context)
    src = sequencer.strip_source(strip)
    strips = sequencer.strips_of(seq_scene)
    relit = strips.get(f"{strip.name} relit") if strips is not None else None
    if relit is not None and relit.type == "IMAGE" and len(relit.elements):
        first = os.path.join(bpy.path.abspath(relit.directory), relit.elements[0].filename)
        return scene3d.load_plate(first, int(relit.frame_final_start), 0)
    return scene3d.load_plate(src.input, src.timeline_start, (src.frames or (0, 1))[0])


def _node(tree, kind: str, name: str, x: float, y: float):
    node = tree.nodes.get(name)
    if node is None or node.bl_idname != kind:
        if node is not None:
            tree.nodes.remove(node)
        node = tree.nodes.new(kind)
        node.name = node.label = name
    node.location = (x, y)
    return node


def _socket(sockets, identifier: str):
    """A node socket by identifier (the Mix node has several sockets of one name, one per data type)."""
    return next(s for s in sockets if s.identifier == identifier)


def compositor_group(scene, name: str):
    """The scene's compositor node group (made, named `name`, and assigned when the scene has none)."""
    tree = scene.compositing_node_group
    if tree is None:
        tree = bpy.data.node_groups.get(name) or bpy.data.node_groups.new(name, "CompositorNodeTree")
        scene.compositing_node_group = tree
    if not any(s.in_out == "OUTPUT" and s.name == "Image" for s in tree.interface.items_tree):
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    return tree


def build_cg_tree(scene, clip):
    """Plate x Shadow Catcher pass, CG over it -> the group's Image output and a Viewer."""
    tree = compositor_group(scene, CG_GROUP)
    links = tree.links
    layers = _node(tree, "CompositorNodeRLayers", "CG Render", -600, 200)
    layers.scene = scene
    plate = _node(tree, "CompositorNodeMovieClip", "Plate", -800, -100)
    plate.clip = clip
    fit = _node(tree, "CompositorNodeScale", "Plate to Render Size", -600, -100)
    fit.inputs["Type"].default_value = "Render Size"
    fit.inputs["Frame Type"].default_value = "Stretch"
    shadow = _node(tree, "ShaderNodeMix", "Plate x Shadow", -300, 0)
    shadow.data_type, shadow.blend_type = "RGBA", "MULTIPLY"
    _socket(shadow.inputs, "Factor_Float").default_value = 1.0
    over = _node(tree, "CompositorNodeAlphaOver", "CG Over Plate", -50, 100)
    out = _node(tree, "NodeGroupOutput", "Group Output", 200, 100)
    viewer = _node(tree, "CompositorNodeViewer", "Viewer", 200, -100)
    links.new(plate.outputs["Image"], fit.inputs["Image"])
    links.new(fit.outputs["Image"], _socket(shadow.inputs, "A_Color"))
    links.new(layers.outputs["Shadow Catcher"], _socket(shadow.inputs, "B_Color"))
    links.new(_socket(shadow.outputs, "Result_Color"), over.inputs["Background"])
    links.new(layers.outputs["Image"], over.inputs["Foreground"])
    links.new(over.outputs["Image"], out.inputs["Image"])
    links.new(over.outputs["Image"], viewer.inputs["Image"])
    return tree


# --------------------------------------------------------------------------------------------- passes

PASS_GROUP = "Portrait Relight Passes"
# the engine's EXR passes as Blender shows them on an Image node (relight_core.passes)
PASS_SOCKETS = ("albedo", "shading", "specular", "shadow", "N", "P", "Pref", "depth", "matte", "id_skin",
                "id_eyes", "id_brows", "id_lips", "id_rest", "normal")


def relit_exr(context, strip) -> tuple:
    """(first EXR file, timeline start, number of files) of the strip's relit EXR frames ("<name> relit");
    ValueError with one sentence when the strip was not relit to OpenEXR."""
    strips = sequencer.strips_of(sequencer.sequencer_scene(context))
    relit = strips.get(f"{strip.name} relit") if strips is not None else None
    names = [e.filename for e in relit.elements] if relit is not None and relit.type == "IMAGE" else []
    if not names or not names[0].lower().endswith(".exr"):
        raise ValueError(f"Strip '{strip.name}' has no relit OpenEXR frames; relight it with Format OpenEXR "
                         "Multilayer first.")
    return os.path.join(bpy.path.abspath(relit.directory), names[0]), int(relit.frame_final_start), len(names)


def build_pass_tree(scene, first_file: str, start: int, count: int):
    """The pass compositor: the relit EXR sequence on an Image node (every pass a socket, frame-aligned),
    albedo x shading + specular -> the rebuilt beauty with the matte as alpha -> the group's Image output
    and a Viewer; the passes are exposed as labelled reroutes."""
    tree = bpy.data.node_groups.get(PASS_GROUP) or bpy.data.node_groups.new(PASS_GROUP, "CompositorNodeTree")
    scene.compositing_node_group = tree
    if not any(s.in_out == "OUTPUT" and s.name == "Image" for s in tree.interface.items_tree):
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    img = bpy.data.images.load(first_file, check_existing=True)
    img.source = "SEQUENCE" if count > 1 else "FILE"
    src = _node(tree, "CompositorNodeImage", "Relit Passes", -900, 0)
    src.image = img
    compositor.time_image_node(src, first_file, start, count)  # the file number shown at `start` on
    mul = _node(tree, "ShaderNodeMix", "Albedo x Shading", -500, 150)
    add = _node(tree, "ShaderNodeMix", "+ Specular", -300, 150)
    for node, blend in ((mul, "MULTIPLY"), (add, "ADD")):
        node.data_type, node.blend_type, node.clamp_result = "RGBA", blend, False
        _socket(node.inputs, "Factor_Float").default_value = 1.0
    alpha = _node(tree, "CompositorNodeSetAlpha", "Matte as Alpha", -100, 150)
    alpha.inputs["Type"].default_value = "Replace Alpha"
    out = _node(tree, "NodeGroupOutput", "Group Output", 150, 150)
    viewer = _node(tree, "CompositorNodeViewer", "Viewer", 150, -50)
    links = tree.links
    links.new(src.outputs["albedo"], _socket(mul.inputs, "A_Color"))
    links.new(src.outputs["shading"], _socket(mul.inputs, "B_Color"))
    links.new(_socket(mul.outputs, "Result_Color"), _socket(add.inputs, "A_Color"))
    links.new(src.outputs["specular"], _socket(add.inputs, "B_Color"))
    links.new(_socket(add.outputs, "Result_Color"), alpha.inputs["Image"])
    links.new(src.outputs["matte"], alpha.inputs["Alpha"])
    links.new(alpha.outputs["Image"], out.inputs["Image"])
    links.new(alpha.outputs["Image"], viewer.inputs["Image"])
    for i, name in enumerate(p for p in PASS_SOCKETS if p in src.outputs):
        hub = _node(tree, "NodeReroute", f"{name} pass", -650, -150 - 40 * i)
        hub.label = name
        links.new(src.outputs[name], hub.inputs[0])
    return tree


class PORTRAIT_RELIGHT_OT_setup_pass_compositor(bpy.types.Operator):
    """Build a compositor tree of the active strip's relit EXR passes (the beauty rebuilt, all passes)"""

    bl_idname = "portrait_relight.setup_pass_compositor"
    bl_label = "Set Up Compositor"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        strip = sequencer.active_strip(sequencer.sequencer_scene(context))
        if strip is None:
            self.report({"ERROR"}, "Select the relit source strip in the sequencer first.")
            return {"CANCELLED"}
        try:
            first, start, count = relit_exr(context, strip)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        tree = build_pass_tree(context.scene, first, start, count)
        context.scene.render.use_compositing = True
        self.report({"INFO"}, f"Compositor '{tree.name}': albedo x shading + specular from {count} frame(s)")
        return {"FINISHED"}


class PORTRAIT_RELIGHT_OT_setup_cg_composite(bpy.types.Operator):
    """Make the tracked head a Cycles holdout and shadow catcher and put the CG render over the relit strip"""

    bl_idname = "portrait_relight.setup_cg_composite"
    bl_label = "Set Up CG Composite"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        head = bpy.data.objects.get(scene3d.HEAD_NAME)
        strip = sequencer.active_strip(sequencer.sequencer_scene(context))
        if head is None or strip is None:
            self.report({"ERROR"}, "Select the footage strip and run Track first: the composite needs the "
                                   "tracked head.")
            return {"CANCELLED"}
        try:
            clip = plate_clip(context, strip)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        scene = context.scene
        make_head_catcher(head)
        configure_render(scene)
        tree = build_cg_tree(scene, clip)
        self.report({"INFO"}, f"'{head.name}' catches shadows and hides CG behind it; compositor "
                              f"'{tree.name}' puts the CG over '{clip.name}'")
        return {"FINISHED"}


CLASSES = (PORTRAIT_RELIGHT_OT_setup_cg_composite, PORTRAIT_RELIGHT_OT_setup_pass_compositor)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    scene3d.EXTRA_BUTTONS[:] = [("portrait_relight.setup_cg_composite", "NODE_COMPOSITING"),
                                ("portrait_relight.setup_pass_compositor", "RENDERLAYERS")]


def unregister() -> None:
    scene3d.EXTRA_BUTTONS[:] = []
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
