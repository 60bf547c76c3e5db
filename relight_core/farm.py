"""Farm jobs as Open Job Description (OpenJD) job bundles: the format a render farm scheduler such as AWS
Deadline Cloud runs (`deadline bundle submit BUNDLE`), and `openjd run` runs on one machine.

A bundle is a folder:

    BUNDLE/template.yaml        the OpenJD job template (jobtemplate-2023-09, extension TASK_CHUNKING)
    BUNDLE/shots/<shot>.json    one worker-protocol request per shot (README, "Worker protocol"): the
                                lighting (per frame), camera (per frame), size, passes, format, ...
    BUNDLE/shots/lights/...     light files or reference images the requests name (copied in)
    BUNDLE/output/<shot>/       the default output folders (`relight --out` layout)

Per shot the template has three steps: "Track <shot>" (the analysis, once), "Relight <shot>" (the shot's
frames in chunks of `ChunkSize`, a CHUNK[INT] task parameter; each chunk warms its temporal state on the
`Warmup` frames before it without writing them, so the chunks equal one pass) depending on it, and
"Encode <shot>" (a movie of the relit frames) depending on the relight. Job parameters: per shot its
input (`Input_<id>`), output folder (`Output_<id>`) and frame range (`Frames_<id>`, an OpenJD range
"A-B", both inclusive); `ChunkSize`, `Warmup`, `EngineCommand` (how a worker runs the engine, default
`relight-core`) and `ShotsDir` (the bundle's `shots/`, a relative default that the scheduler resolves
against the bundle). Tasks run `EngineCommand farm-task {track|relight|encode} ...`.

This module only writes bundles: standard library and numpy-free, so the Blender add-on can use it.
The tasks themselves and the local parallel run are in `relight_core.farm_run`.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from relight_core.errors import UserError

TEMPLATE_NAME = "template.yaml"
PARAMETER_VALUES = "parameter_values.yaml"  # Deadline Cloud's job bundle parameter file
PARAMETERS_JSON = "job_parameters.json"  # the same values for `openjd run -p file://...`
SHOTS_DIR = "shots"
LIGHTS_DIR = "lights"
DEFAULT_ENGINE = "relight-core"
DEFAULT_CHUNK = 50
DEFAULT_WARMUP = 12
MAX_CHUNK = 150  # Deadline Cloud's limit for chunks.defaultTaskCount
STEP_KINDS = ("Track", "Relight", "Encode")


@dataclass
class Shot:
    """One shot of a farm job: a unique name (file- and step-safe) and its worker-protocol request.

    request["frames"] must be the concrete source range [first, last_exclusive]; request["input"] and
    request["output"] are the defaults of the shot's Input/Output job parameters.
    """

    name: str
    request: dict


# --------------------------------------------------------------------------------------------- names

def safe_name(text: str) -> str:
    """A name for files and OpenJD identifiers: letters, digits, '_', '-', '.' (others become '_')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "shot"


def unique_names(names: Iterable[str]) -> list[str]:
    """Safe names made unique by a numeric suffix (`clip`, `clip_2`, ...), in order."""
    out: list[str] = []
    seen: set[str] = set()
    for name in names:
        base = safe_name(name)[:40]
        cand, n = base, 2
        while cand.lower() in seen:
            cand, n = f"{base}_{n}", n + 1
        seen.add(cand.lower())
        out.append(cand)
    return out


def param_id(shot: str) -> str:
    """The shot's suffix in job parameter names (identifier characters only)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", shot)


def step_name(kind: str, shot: str) -> str:
    """'Track lp_d18', 'Relight lp_d18', 'Encode lp_d18'."""
    return f"{kind} {shot}"


# --------------------------------------------------------------------------------------------- ranges

def openjd_range(frames: tuple[int, int]) -> str:
    """Source frames [first, last_exclusive) -> OpenJD's inclusive range expression 'first-last'."""
    a, b = int(frames[0]), int(frames[1])
    return f"{a}-{b - 1}" if b - a > 1 else f"{a}"


def parse_openjd_range(text: str, what: str = "frame range") -> tuple[int, int]:
    """OpenJD's 'A-B' (inclusive) or 'A' -> (A, B + 1); UserError for anything else (a farm chunk or a
    shot is one contiguous stretch of frames)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(text))
    if not m:
        raise UserError(f"The {what} '{text}' is not A-B (two frame numbers, both included) or one frame.")
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) is not None else a
    if b < a:
        raise UserError(f"The {what} '{text}' ends before it starts; give A-B with A <= B.")
    return a, b + 1


def chunk_ranges(frames: tuple[int, int], chunk: int) -> list[tuple[int, int]]:
    """The contiguous chunks [a, b) of `chunk` frames (the last may be shorter) that OpenJD's
    CONTIGUOUS CHUNK[INT] makes of `frames`."""
    a, b = frames
    return [(s, min(s + chunk, b)) for s in range(a, b, chunk)]


# --------------------------------------------------------------------------------------------- YAML

def _yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(str(value))  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(value, indent: int = 0) -> str:
    """Block-style YAML of dicts, lists and scalars (strings always double-quoted), ending in a newline.
    Enough for job templates; written by hand so that Blender, which has no YAML library, can too."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(v, indent + 2).rstrip("\n"))
            else:
                lines.append(f"{pad}{key}: {_yaml_scalar(v) if not isinstance(v, (dict, list)) else '[]'}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {body[indent + 2:].rstrip(chr(10))}")
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}")
    else:
        lines.append(pad + _yaml_scalar(value))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- template

def _path_param(name: str, description: str, default: str | None, object_type: str, flow: str,
                hidden: bool = False) -> dict:
    param = {"name": name, "description": description, "type": "PATH", "objectType": object_type,
             "dataFlow": flow}
    if default is not None:  # OpenJD: a default path is relative, joined to the template's folder
        param["default"] = default
    if hidden:
        param["userInterface"] = {"control": "HIDDEN"}
    return param


def _task_script(args: list[str]) -> dict:
    """A step script that runs `{{Param.EngineCommand}} ARGS...`: the engine command is split into words
    by bash (so it may be `python -m relight_core`), the arguments are passed as they are (paths with
    spaces or quotes are safe)."""
    return {"actions": {"onRun": {
        "command": "bash",
        "args": ["-c", 'export PYTHONUNBUFFERED=1; exec {{Param.EngineCommand}} "$@"', "relight-core", *args],
        "cancelation": {"mode": "NOTIFY_THEN_TERMINATE"},
    }}}


def shot_parameters(shot: Shot) -> list[dict]:
    """The job parameters of one shot: its input (no default: OpenJD defaults must lie inside the bundle;
    the value is in the bundle's parameter files), output folder (default `output/<shot>` in the bundle)
    and frame range."""
    pid = param_id(shot.name)
    req = shot.request
    is_dir = Path(req["input"]).is_dir()
    return [
        _path_param(f"Input_{pid}", f"Footage of shot {shot.name} (movie file or image-sequence folder).",
                    None, "DIRECTORY" if is_dir else "FILE", "IN"),
        _path_param(f"Output_{pid}", f"Output folder of shot {shot.name} (laid out as `relight --out`).",
                    f"output/{shot.name}", "DIRECTORY", "OUT"),
        {"name": f"Frames_{pid}", "description": f"Source frames of shot {shot.name}, first-last (both "
         "included, 0-based).", "type": "STRING", "default": openjd_range(tuple(req["frames"])),
         "minLength": 1},
    ]


def shot_steps(shot: Shot) -> list[dict]:
    """Track -> Relight (CHUNK[INT] over the shot's frames) -> Encode, for one shot."""
    pid = param_id(shot.name)
    common = ["--request", f"{{{{Param.ShotsDir}}}}/{shot.name}.json",
              "--input", f"{{{{Param.Input_{pid}}}}}", "--out", f"{{{{Param.Output_{pid}}}}}",
              "--frames", f"{{{{Param.Frames_{pid}}}}}"]
    track, relight, encode = (step_name(k, shot.name) for k in STEP_KINDS)
    return [
        {"name": track, "description": f"Analyse shot {shot.name} once (tracking, pose, matte).",
         "script": _task_script(["farm-task", "track", *common])},
        {"name": relight, "description": f"Relight shot {shot.name} in chunks of frames.",
         "dependencies": [{"dependsOn": track}],
         "parameterSpace": {"taskParameterDefinitions": [{
             "name": "Frame", "type": "CHUNK[INT]", "range": f"{{{{Param.Frames_{pid}}}}}",
             "chunks": {"defaultTaskCount": "{{Param.ChunkSize}}", "rangeConstraint": "CONTIGUOUS"}}]},
         "script": _task_script(["farm-task", "relight", *common, "--chunk", "{{Task.Param.Frame}}",
                                 "--warmup", "{{Param.Warmup}}"])},
        {"name": encode, "description": f"Encode the relit frames of shot {shot.name} as a movie.",
         "dependencies": [{"dependsOn": relight}],
         "script": _task_script(["farm-task", "encode", *common])},
    ]


def job_template(name: str, shots: list[Shot], chunk: int, warmup: int, engine: str) -> dict:
    """The OpenJD job template (a dict) of a farm job."""
    params: list[dict] = []
    for shot in shots:
        params += shot_parameters(shot)
    params += [
        {"name": "ChunkSize", "description": "Frames per Relight task.", "type": "INT", "default": int(chunk),
         "minValue": 1, "maxValue": MAX_CHUNK},
        {"name": "Warmup", "description": "Frames before each chunk that are processed but not written, so "
         "that the temporal filters start as in one pass.", "type": "INT", "default": int(warmup),
         "minValue": 0},
        {"name": "EngineCommand", "description": "How a worker runs the engine: an executable on its PATH "
         "or a command line (e.g. /opt/relight/.venv/bin/relight-core, or python -m relight_core).",
         "type": "STRING", "default": engine, "minLength": 1},
        _path_param("ShotsDir", "The bundle's shots/ folder (the requests).", SHOTS_DIR, "DIRECTORY", "IN",
                    hidden=True),
    ]
    steps: list[dict] = []
    for shot in shots:
        steps += shot_steps(shot)
    return {"specificationVersion": "jobtemplate-2023-09", "extensions": ["TASK_CHUNKING"],
            "name": name, "description": "Portrait Relight farm job: per shot Track, Relight in chunks, "
            "Encode. Written by relight-core farm-job.", "parameterDefinitions": params, "steps": steps}


# --------------------------------------------------------------------------------------------- writing

def _localize_lighting(lighting, bundle: Path, shot: str):
    """A request's lighting with a light file or reference image copied into BUNDLE/shots/lights/ and
    named relative to shots/ (so that the bundle carries it to the farm)."""
    kind, path = None, None
    if isinstance(lighting, dict):
        kind = next((k for k in ("file", "reference") if k in lighting), None)
        path = lighting.get(kind) if kind else None
    elif isinstance(lighting, str) and lighting != "input" and Path(lighting).expanduser().is_file():
        kind, path = "file", lighting
    if kind is None:
        return lighting
    src = Path(str(path)).expanduser()
    if not src.is_file():
        raise UserError(f"The light file {src} of shot {shot} does not exist.")
    dest = bundle / SHOTS_DIR / LIGHTS_DIR / f"{shot}_{safe_name(src.name)}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    return {kind: f"{LIGHTS_DIR}/{dest.name}"}


def _check_shot(shot: Shot) -> None:
    frames = shot.request.get("frames")
    if not (isinstance(frames, (list, tuple)) and len(frames) == 2 and 0 <= int(frames[0]) < int(frames[1])):
        raise UserError(f"Shot {shot.name} needs a frame range [first, last_exclusive]; got {frames!r}.")
    if not shot.request.get("input") or not shot.request.get("output"):
        raise UserError(f"Shot {shot.name} needs an input and an output folder.")


def parameter_values(shots: list[Shot], relative_outputs: bool) -> dict[str, str]:
    """The job parameter values a bundle is submitted with: every shot's input (absolute), and its output
    folder unless it is the bundle's default `output/<shot>`."""
    values: dict[str, str] = {}
    for shot in shots:
        pid = param_id(shot.name)
        values[f"Input_{pid}"] = str(Path(shot.request["input"]).expanduser().resolve())
        if not relative_outputs:
            values[f"Output_{pid}"] = str(Path(shot.request["output"]).expanduser().resolve())
    return values


def write_bundle(bundle: str | Path, shots: list[Shot], chunk: int = DEFAULT_CHUNK,
                 warmup: int = DEFAULT_WARMUP, engine: str = DEFAULT_ENGINE, name: str | None = None,
                 relative_outputs: bool = False) -> Path:
    """Write an OpenJD job bundle for `shots` -> the template's path.

    Besides `template.yaml` and `shots/`, the bundle holds the parameter values twice: in Deadline
    Cloud's `parameter_values.yaml` (read by `deadline bundle submit`) and as `job_parameters.json` (for
    `openjd run template.yaml -p file://job_parameters.json`). relative_outputs: the frames go to
    `output/<shot>` inside the bundle (the CLI); otherwise to each request's own output folder (Blender:
    where a local relight writes, so that loading results finds them). Files are written under temporary
    names and renamed, so a failure leaves no half-written file."""
    if not shots:
        raise UserError("A farm job needs at least one shot.")
    if not 1 <= int(chunk) <= MAX_CHUNK:
        raise UserError(f"Chunk size {chunk} is out of range; give 1..{MAX_CHUNK} frames per task.")
    if int(warmup) < 0:
        raise UserError(f"Warm-up {warmup} is negative; give 0 or more frames.")
    if not str(engine).strip():
        raise UserError("The engine command is empty; give e.g. relight-core.")
    bundle = Path(bundle).expanduser().resolve()
    try:
        (bundle / SHOTS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"Bundle folder {bundle} cannot be created ({exc.strerror or exc}).") from None
    for shot in shots:
        _check_shot(shot)
        req = dict(shot.request)
        req["lighting"] = _localize_lighting(req.get("lighting"), bundle, shot.name)
        _write_text(bundle / SHOTS_DIR / f"{shot.name}.json", json.dumps(req, indent=1) + "\n")
    template = job_template(name or f"Portrait Relight: {', '.join(s.name for s in shots)}"[:128], shots,
                            chunk, warmup, engine)
    values = parameter_values(shots, relative_outputs)
    _write_text(bundle / PARAMETERS_JSON, json.dumps(values, indent=1) + "\n")
    _write_text(bundle / PARAMETER_VALUES, to_yaml(
        {"parameterValues": [{"name": k, "value": v} for k, v in values.items()]}))
    path = bundle / TEMPLATE_NAME
    _write_text(path, "# Open Job Description job template written by relight-core farm-job.\n"
                      + to_yaml(template))
    return path


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"Could not write {path} ({exc.strerror or exc}).") from None
