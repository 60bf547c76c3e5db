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

Both trees are built alike in Blender 4.5 (the scene's node tree, Composite output, MixRGB, settings as node
properties) and 5.0 (a compositor node group, Group Output, Mix, settings as input sockets).
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


def compositor_group(scene, name: str, replace: bool = False) -> tuple:
    """(the tree to build in, the input socket that is its result). 5.0: the scene's compositor node group,
    or the group `name` (made when missing) when the scene has none or `replace`; 4.5: the scene's node
    tree (compositing switched on) with its Composite node."""
    if not compositor.is_legacy() and (replace or scene.compositing_node_group is None):
        scene.compositing_node_group = (bpy.data.node_groups.get(name)
                                        or bpy.data.node_groups.new(name, "CompositorNodeTree"))
    tree, _fresh = compositor.compositor_tree(scene)
    return tree, compositor.output_socket(tree)


def _option(node, socket: str, value: str, prop: str, enum: str) -> None:
    """A node setting: the menu input `socket` set to `value` in 5.0, the property `prop` to `enum` in 4.5."""
    if compositor.is_legacy():
        setattr(node, prop, enum)
    else:
        node.inputs[socket].default_value = value


def _mix(tree, name: str, blend: str, x: float, y: float) -> tuple:
    """A colour Mix node `name` at factor 1, unclamped -> (input A, input B, result). The compositor's mix is
    MixRGB in 4.5 and the shared Mix node (RGBA) in 5.0."""
    if compositor.is_legacy():
        node = _node(tree, "CompositorNodeMixRGB", name, x, y)
        node.blend_type, node.use_clamp = blend, False
        node.inputs["Fac"].default_value = 1.0
        return _socket(node.inputs, "Image"), _socket(node.inputs, "Image_001"), node.outputs["Image"]
    node = _node(tree, "ShaderNodeMix", name, x, y)
    node.data_type, node.blend_type, node.clamp_result = "RGBA", blend, False
    _socket(node.inputs, "Factor_Float").default_value = 1.0
    return (_socket(node.inputs, "A_Color"), _socket(node.inputs, "B_Color"),
            _socket(node.outputs, "Result_Color"))


def _alpha_over_inputs(node) -> tuple:
    """(background, foreground) inputs of an Alpha Over node (two sockets named Image in 4.5)."""
    if compositor.is_legacy():
        return _socket(node.inputs, "Image"), _socket(node.inputs, "Image_001")
    return node.inputs["Background"], node.inputs["Foreground"]


def build_cg_tree(scene, clip):
    """Plate x Shadow Catcher pass, CG over it -> the compositor's output and a Viewer."""
    tree, out = compositor_group(scene, CG_GROUP)
    links = tree.links
    layers = _node(tree, "CompositorNodeRLayers", "CG Render", -600, 200)
    layers.scene = scene
    plate = _node(tree, "CompositorNodeMovieClip", "Plate", -800, -100)
    plate.clip = clip
    fit = _node(tree, "CompositorNodeScale", "Plate to Render Size", -600, -100)
    _option(fit, "Type", "Render Size", "space", "RENDER_SIZE")
    _option(fit, "Frame Type", "Stretch", "frame_method", "STRETCH")
    plate_in, shadow_in, shadowed = _mix(tree, "Plate x Shadow", "MULTIPLY", -300, 0)
    over = _node(tree, "CompositorNodeAlphaOver", "CG Over Plate", -50, 100)
    background, foreground = _alpha_over_inputs(over)
    out.node.location = (200, 100)  # Group Output (5.0) / Composite (4.5)
    viewer = _node(tree, "CompositorNodeViewer", "Viewer", 200, -100)
    links.new(plate.outputs["Image"], fit.inputs["Image"])
    links.new(fit.outputs["Image"], plate_in)
    links.new(layers.outputs["Shadow Catcher"], shadow_in)
    links.new(shadowed, background)
    links.new(layers.outputs["Image"], foreground)
    links.new(over.outputs["Image"], out)
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
    albedo x shading + specular -> the rebuilt beauty with the matte as alpha -> the compositor's output
    and a Viewer; the passes are exposed as labelled reroutes."""
    tree, out = compositor_group(scene, PASS_GROUP, replace=True)
    img = bpy.data.images.load(first_file, check_existing=True)
    img.source = "SEQUENCE" if count > 1 else "FILE"
    src = _node(tree, "CompositorNodeImage", "Relit Passes", -900, 0)
    src.image = img
    compositor.time_image_node(src, first_file, start, count)  # the file number shown at `start` on
    albedo, shading, product = _mix(tree, "Albedo x Shading", "MULTIPLY", -500, 150)
    diffuse, specular, beauty = _mix(tree, "+ Specular", "ADD", -300, 150)
    alpha = _node(tree, "CompositorNodeSetAlpha", "Matte as Alpha", -100, 150)
    _option(alpha, "Type", "Replace Alpha", "mode", "REPLACE_ALPHA")
    out.node.location = (150, 150)
    viewer = _node(tree, "CompositorNodeViewer", "Viewer", 150, -50)
    links = tree.links
    links.new(src.outputs["albedo"], albedo)
    links.new(src.outputs["shading"], shading)
    links.new(product, diffuse)
    links.new(src.outputs["specular"], specular)
    links.new(beauty, alpha.inputs["Image"])
    links.new(src.outputs["matte"], alpha.inputs["Alpha"])
    links.new(alpha.outputs["Image"], out)
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
