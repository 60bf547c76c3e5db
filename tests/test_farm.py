"""Farm jobs: OpenJD bundles (`relight-core farm-job`), their tasks (`farm-task`), the local parallel run,
and the chunking guarantee (chunks rendered apart equal one pass)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from relight_core import farm, farm_run, layout
from relight_core.cli import main
from relight_core.errors import UserError

yaml = pytest.importorskip("yaml")
REPO = Path(__file__).resolve().parents[1]


def openjd() -> str:
    try:
        return farm_run.openjd_command()[0]
    except UserError:
        pytest.skip("openjd-cli is not installed (requirements-dev.txt)")


@pytest.fixture()
def sequence(tmp_path) -> Path:
    """A 5-frame image-sequence folder (grey frames: enough for writing bundles, no face needed)."""
    import cv2

    folder = tmp_path / "seq"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"f_{i:04d}.png"), np.full((24, 32, 3), 60 + 20 * i, np.uint8))
    return folder


def test_bundle_is_valid_openjd_with_chunked_steps(sequence, tmp_path):
    light = tmp_path / "key.json"
    light.write_text(json.dumps({"format": "portrait-relight-lighting", "version": 1,
                                 "sh": [[0.8, 0.8, 0.8]] + [[0.0, 0.0, 0.0]] * 8}))
    bundle = tmp_path / "job"
    assert main(["farm-job", str(sequence), "--out", str(bundle), "--chunk", "2", "--light", str(light),
                 "--size", "64", "--passes", "rgba,albedo"]) == 0

    template = yaml.safe_load((bundle / "template.yaml").read_text())
    assert template["extensions"] == ["TASK_CHUNKING"]
    steps = [s["name"] for s in template["steps"]]
    assert steps == ["Track seq", "Relight seq", "Encode seq"]
    assert template["steps"][1]["dependencies"] == [{"dependsOn": "Track seq"}]
    assert template["steps"][2]["dependencies"] == [{"dependsOn": "Relight seq"}]
    params = {p["name"]: p for p in template["parameterDefinitions"]}
    assert params["Frames_seq"]["default"] == "0-4" and params["Output_seq"]["default"] == "output/seq"
    assert params["EngineCommand"]["default"] == "relight-core" and "default" not in params["Input_seq"]
    values = json.loads((bundle / "job_parameters.json").read_text())
    assert values == {"Input_seq": str(sequence.resolve())}

    check = subprocess.run([openjd(), "check", str(bundle / "template.yaml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tasks = farm_run.plan_tasks(bundle, values)
    assert [(t.step, t.params) for t in tasks] == [
        ("Track seq", {}), ("Relight seq", {"Frame": "0-1"}), ("Relight seq", {"Frame": "2-3"}),
        ("Relight seq", {"Frame": "4-4"}), ("Encode seq", {})]

    # the light file travels inside the bundle; a task finds it there, and the job parameters win
    req = json.loads((bundle / "shots" / "seq.json").read_text())
    assert req["lighting"] == {"file": "lights/seq_key.json"} and req["passes"] == ["rgba", "albedo"]
    got = farm_run.load_shot_request(bundle / "shots" / "seq.json", "/elsewhere/seq", "/out/seq", "1-3")
    assert got["lighting"] == {"file": str(bundle / "shots" / "lights" / "seq_key.json")}
    assert (got["input"], got["output"], got["frames"]) == ("/elsewhere/seq", "/out/seq", [1, 4])


def test_farm_user_errors_are_one_sentence(sequence, tmp_path, capsys):
    image = next(sequence.iterdir())
    assert main(["farm-job", str(image), "--out", str(tmp_path / "b1")]) == 2
    assert main(["farm-job", str(sequence), "--out", str(tmp_path / "b2"), "--chunk", "0"]) == 2
    assert main(["farm-job", "--out", str(tmp_path / "b3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "single image" in err[0] and "Chunk size 0" in err[1] and "INPUT" in err[2]
    assert not (tmp_path / "b1" / "template.yaml").exists()
    with pytest.raises(UserError, match="ends before"):
        farm.parse_openjd_range("5-3")
    with pytest.raises(UserError, match="not A-B"):
        farm.parse_openjd_range("1,3")
    assert farm.parse_openjd_range("7") == (7, 8)
    assert farm.unique_names(["a b", "a_b", "A_B"]) == ["a_b", "a_b_2", "A_B_3"]


FAKE_ENGINE = """
import sys, time
args = sys.argv[1:]
kind = args[1]
chunk = args[args.index("--chunk") + 1] if "--chunk" in args else ""
log = sys.argv[0] + ".log"
with open(log, "a") as f:
    f.write(f"{time.time()} start {kind} {chunk}\\n")
# a chunk waits (up to 30 s) for the other chunk to start: only a parallel run lets both end early
t = time.time()
while kind == "relight" and time.time() - t < 30 and open(log).read().count("start relight") < 2:
    time.sleep(0.05)
with open(log, "a") as f:
    f.write(f"{time.time()} end {kind} {chunk}\\n")
print(f"fake {kind} {chunk}")
sys.exit(3 if chunk == "2-3" else 0)
"""


def test_run_local_runs_chunks_in_parallel_after_track_and_reports_a_failed_chunk(sequence, tmp_path,
                                                                                   capsys):
    fake = tmp_path / "fake_engine.py"
    fake.write_text(FAKE_ENGINE)
    bundle = tmp_path / "job"
    shot = farm.Shot("seq", {"input": str(sequence), "frames": [0, 4], "output": str(tmp_path / "o"),
                             "lighting": "input"})
    farm.write_bundle(bundle, [shot], chunk=2, engine=f"{sys.executable} {fake}")

    # the bundle is already written (as Blender's Export Farm Job writes it): run it alone
    assert main(["farm-job", "--out", str(bundle), "--run-local", "--workers", "2"]) == 1

    events = [line.split() for line in Path(str(fake) + ".log").read_text().splitlines()]
    times = {(e[1], e[2], e[3] if len(e) > 3 else ""): float(e[0]) for e in events}
    track_end = times[("end", "track", "")]
    starts = {e[3]: times[("start", "relight", e[3])] for e in events if e[1:3] == ["start", "relight"]}
    assert sorted(starts) == ["0-1", "2-3"] and min(starts.values()) > track_end
    # two workers: the first two chunks ran at the same time
    assert starts["2-3"] < times[("end", "relight", "0-1")]
    assert starts["0-1"] < times[("end", "relight", "2-3")]
    assert not any(e[2] == "encode" for e in events)  # it depends on the failed chunk
    out = capsys.readouterr().out
    assert "Relight seq Frame=2-3: FAILED" in out and "skipped Encode seq" in out
    assert "--task-param Frame=2-3" in out  # how to rerun the failed chunk alone
    assert "fake relight 2-3" in (bundle / "logs" / "Relight_seq_Frame_2-3.log").read_text()


@pytest.mark.slow
def test_three_chunks_under_openjd_equal_one_pass(fixtures_dir, tmp_path):
    """24 frames of lp_d18 at 160 px: Track, 3 Relight chunks of 8 and Encode run by `openjd run` (with
    its dependencies) give every frame within 2/255 of a one-pass render; a finished chunk reruns as a
    no-op."""
    import cv2

    from relight_core import pipeline

    clip = fixtures_dir / "videos" / "lp_d18.mp4"
    one = pipeline.run(pipeline.RelightJob(input=str(clip), output=str(tmp_path / "one"),
                                           lighting="rembrandt", frames=(0, 24), size=160))
    assert one["totals"]["written"] == 24
    bundle = tmp_path / "job"
    assert main(["farm-job", str(clip), "--out", str(bundle), "--light", "rembrandt", "--frames", "0:24",
                 "--size", "160", "--chunk", "8", "--engine", f"{sys.executable} -m relight_core"]) == 0
    template = str(bundle / "template.yaml")
    params = f"file://{bundle / 'job_parameters.json'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert subprocess.run([openjd(), "check", template], capture_output=True).returncode == 0
    run = subprocess.run([openjd(), "run", template, "-p", params, "--step", "Encode lp_d18",
                          "--run-dependencies"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.stdout.count("relight: wrote 8 frame(s)") == 3 and "encode: 24 frame(s)" in run.stdout

    out = bundle / "output" / "lp_d18"
    worst = 0
    for i in range(24):
        name = f"rgba/lp_d18_{i:06d}.png"
        a = cv2.imread(str(tmp_path / "one" / name), cv2.IMREAD_UNCHANGED).astype(int)
        b = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED).astype(int)
        worst = max(worst, int(np.abs(a - b).max()))
    print(f"largest difference, 3 chunks vs one pass: {worst}/255")
    assert worst <= 2
    report = json.loads(layout.report_file(out).read_text())
    assert [f["index"] for f in report["frames"]] == list(range(24))
    assert (out / "lp_d18_relit.mp4").stat().st_size > 0

    # a local relight of the same request (what Blender's Relight sends) finds every frame done
    local = pipeline.run(farm_run.job_of(json.loads((bundle / "shots" / "lp_d18.json").read_text())
                                         | {"output": str(out)}))
    assert (local["totals"]["written"], local["totals"]["skipped"]) == (0, 24)
    # what `openjd run ... --step "Relight lp_d18" --task-param Frame=16-23` runs again: nothing to do
    lines: list[str] = []
    req = farm_run.load_shot_request(bundle / "shots" / "lp_d18.json", str(clip), str(out), "0-23")
    assert farm_run.run_chunk(req, "16-23", farm.DEFAULT_WARMUP, log=lines.append) == 0
    assert "wrote 0 frame(s), 8 already done" in lines[-1]
