"""What is cached is what it says it is: a run's files are named by its config, each study keeps its
own results, a code change is named run by run, and an unusable checkpoint is named and retrained."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, cached_runs, checkpoint_file, checkpoint_files, report_file, results_file, trained_runs
from lwsupcrd.checkpoint import content_sha256, load_checkpoint, safe_load, weights_sha256

TEACHER, PROJ = "teacher_resnet8_cifar100", "teacher_resnet8_cifar100_with_projection"
STUDENT = "student_baseline_crd_resnet8_cifar100"  # distilled: it needs the teacher and its head


@pytest.fixture()
def three_runs(smoke, tmp_path):
    """The smoke study's teacher, head and SupCon student in a fresh out-dir."""
    out = tmp_path / "out"
    (out / "pth_models").mkdir(parents=True)
    for name in (TEACHER, PROJ, STUDENT):
        shutil.copy(checkpoint_file(smoke["out"], name), out / "pth_models")
    return smoke["data"], out


def study(data, out, *extra, script=ROOT / "desupcon.py"):
    cmd = [sys.executable, str(script), "--preset", "smoke", "--data-dir", str(data), "--out-dir", str(out),
           "--only", STUDENT, *map(str, extra)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**__import__("os").environ, "TQDM_DISABLE": "1"},
                          cwd=script.parent)


def test_other_settings_never_replace_a_run_and_going_back_reads_the_cache(three_runs):
    data, out = three_runs
    first = study(data, out)
    assert first.returncode == 0, first.stderr[-2000:]
    assert trained_runs(first.stdout) == [] and sorted(cached_runs(first.stdout)) == sorted([TEACHER, PROJ, STUDENT])
    original = checkpoint_file(out, STUDENT).read_bytes()
    other = study(data, out, "--set", "student_lr=0.002")
    assert trained_runs(other.stdout) == [STUDENT]  # the teacher and its head do not depend on student_lr
    supcons = checkpoint_files(out, STUDENT)
    assert len(supcons) == 2 and original in [p.read_bytes() for p in supcons]
    files = sorted((out / "json_results").glob("comprehensive_results_*.json"))
    assert len(files) == 2  # one per settings, each with its own entry
    lrs = {json.loads(f.read_text())["runs"][STUDENT]["config"]["lr"] for f in files}
    assert lrs == {1e-3, 2e-3}
    back = study(data, out)
    assert back.returncode == 0 and trained_runs(back.stdout) == []
    assert "probe settings changed" not in back.stdout


def test_two_concurrent_studies_with_different_settings_keep_everything(smoke, tmp_path):
    out = tmp_path / "out"
    cmds = [[sys.executable, str(ROOT / "desupcon.py"), "--preset", "smoke", "--data-dir", str(smoke["data"]),
             "--out-dir", str(out), "--only", STUDENT, "--set", f"student_lr={lr}"] for lr in ("0.001", "0.003")]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outputs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outputs]
    trained = [trained_runs(o) for o, _ in outputs]
    assert sorted(sum(trained, [])) == sorted([TEACHER, PROJ, STUDENT, STUDENT])  # the shared runs once
    assert len(checkpoint_files(out, STUDENT)) == 2
    assert len(list((out / "json_results" / "training_logs").glob(f"{STUDENT}-*.json"))) == 2
    files = sorted((out / "json_results").glob("comprehensive_results_*.json"))
    assert {json.loads(f.read_text())["runs"][STUDENT]["config"]["lr"] for f in files} == {1e-3, 3e-3}
    for cmd in cmds:
        again = subprocess.run(cmd, capture_output=True, text=True)
        assert again.returncode == 0 and trained_runs(again.stdout) == []


def test_probe_only_change_reprobes_without_retraining(three_runs):
    """The cached network is probed again under the other settings; those scores go beside its
    checkpoint, keyed by the settings, and the checkpoint itself is never rewritten."""
    data, out = three_runs
    original = checkpoint_file(out, STUDENT).read_bytes()
    res = study(data, out, "--set", "probe_epochs=3")
    assert res.returncode == 0, res.stderr[-2000:]
    assert trained_runs(res.stdout) == [] and f"== {STUDENT}: probe settings changed" in res.stdout
    assert checkpoint_file(out, STUDENT).read_bytes() == original
    scores = list((out / "pth_models").glob(f"{STUDENT}-*.scores-*.json"))
    assert len(scores) == 1 and json.loads(scores[0].read_text())["config"]["probe_epochs"] == 3
    back = study(data, out)
    assert back.returncode == 0 and "probe settings changed" not in back.stdout
    assert checkpoint_file(out, STUDENT).read_bytes() == original


def test_a_code_change_is_named_run_by_run_and_retrained_on_request(three_runs, tmp_path):
    data, out = three_runs
    code = tmp_path / "code"  # a copy of the project whose code the test changes
    shutil.copytree(ROOT / "lwsupcrd", code / "lwsupcrd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "desupcon.py", code)
    first = study(data, out, "--force-retrain", script=code / "desupcon.py")  # trained by the copy's code
    assert first.returncode == 0 and sorted(trained_runs(first.stdout)) == sorted([TEACHER, PROJ, STUDENT])
    with open(code / "lwsupcrd" / "losses.py", "a") as f:
        f.write("\nSCALE = 1.0001  # a change to the code that computes the runs\n")

    changed = study(data, out, "--force-retrain", f"{STUDENT}*", script=code / "desupcon.py")
    assert changed.returncode == 0, changed.stderr[-2000:]
    block = changed.stdout.split("cached run(s) were trained by other code", 1)[1].split("\n==", 1)[0]
    assert f"  {TEACHER}: " in block and f"  {PROJ}: " in block and STUDENT not in block
    assert "--retrain-other-code retrains exactly these" in block
    assert trained_runs(changed.stdout) == [STUDENT]
    report = report_file(out).read_text()
    versions = {e["code"]["fingerprint"] for e in json.loads(results_file(out).read_text())["runs"].values()}
    assert len(versions) == 2 and "## Code versions" in report
    assert "CRD, the original's instance form †" in report and "Teacher (resnet8) †" not in report  # the minority run is marked

    again = study(data, out, "--retrain-other-code", script=code / "desupcon.py")
    assert again.returncode == 0, again.stderr[-2000:]
    assert {TEACHER, PROJ} <= set(trained_runs(again.stdout))
    last = study(data, out, script=code / "desupcon.py")
    assert "trained by other code" not in last.stdout and trained_runs(last.stdout) == []
    assert "Every run was computed by the same code." in report_file(out).read_text()


def resave(path, edit):
    """Rewrite a checkpoint after `edit(ckpt)`, with both checksums recomputed (a consistent file)."""
    ckpt = safe_load(path)
    edit(ckpt)
    ckpt["weights_sha256"] = weights_sha256(ckpt["state_dict"])
    ckpt["sha256"] = content_sha256({k: v for k, v in ckpt.items() if k != "sha256"})
    torch.save(ckpt, path)


@pytest.mark.parametrize("damage,said", [
    ("edit_metrics", "content does not match its stored checksum"),
    ("nan_weights", "holds non-finite values"),
    ("extra_key", "its weights do not fit the network"),
    ("garbage", "unreadable or truncated checkpoint"),
])
def test_an_unusable_cached_checkpoint_is_named_and_retrained(three_runs, damage, said):
    data, out = three_runs
    path = checkpoint_file(out, STUDENT)
    if damage == "edit_metrics":  # the metrics edited, the stored checksum left as it was
        ckpt = safe_load(path)
        ckpt["metrics"]["probe_test_acc"] = 99.9
        torch.save(ckpt, path)
    elif damage == "nan_weights":
        resave(path, lambda c: c["state_dict"]["backbone.fc.weight"].fill_(float("nan")))
    elif damage == "extra_key":  # what a changed model definition meets
        resave(path, lambda c: c["state_dict"].__setitem__("backbone.fc2.weight", torch.zeros(3)))
    else:
        path.write_text("hello\n")
    res = study(data, out)
    assert res.returncode == 0, res.stderr[-2000:]
    assert said in res.stdout and trained_runs(res.stdout) == [STUDENT]
    assert load_checkpoint(path)["metrics"]["probe_test_acc"] != 99.9


def test_a_directory_where_a_checkpoint_should_be_is_one_line(three_runs):
    data, out = three_runs
    path = checkpoint_file(out, STUDENT)
    path.unlink()
    path.mkdir()
    res = study(data, out)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{path} is a directory where {STUDENT}'s checkpoint should be" in res.stderr
    assert path.is_dir() and len(list((out / "pth_models").glob("*.pth"))) == 3


def test_a_full_disk_is_one_line_and_keeps_every_finished_file(three_runs):
    import resource
    import signal

    data, out = three_runs
    before = {p.name: p.read_bytes() for p in (out / "pth_models").glob("*.pth")}

    def small_files():  # writes past 200 kB fail as on a full disk (EFBIG instead of ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    cmd = [sys.executable, str(ROOT / "desupcon.py"), "--preset", "smoke", "--data-dir", str(data), "--out-dir",
           str(out), "--only", STUDENT, "--force-retrain", f"{STUDENT}*"]
    res = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=small_files,
                         env={**__import__("os").environ, "TQDM_DISABLE": "1"})
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "cannot write " in res.stderr and "File too large" in res.stderr and "are kept" in res.stderr
    assert {p.name: p.read_bytes() for p in (out / "pth_models").glob("*.pth")} == before
    assert not list(out.rglob("*.tmp"))


def test_the_code_version_is_the_source_as_imported_not_the_file_now(tmp_path):
    """A process (a Jupyter kernel) that imported the code keeps its fingerprint after the file on
    disk changes; a new process sees the change."""
    code = tmp_path / "code"
    shutil.copytree(ROOT / "lwsupcrd", code / "lwsupcrd", ignore=shutil.ignore_patterns("__pycache__"))
    script = ("import sys, pathlib; sys.path.insert(0, sys.argv[1]); import lwsupcrd.train; "
              "from lwsupcrd.code import code_version; before = code_version()['fingerprint']; "
              "f = pathlib.Path(sys.argv[1]) / 'lwsupcrd' / 'losses.py'; f.write_text(f.read_text() + '# edited\\n'); "
              "print(before, code_version()['fingerprint'])")
    first = subprocess.run([sys.executable, "-c", script, str(code)], capture_output=True, text=True, cwd=tmp_path)
    before, after = first.stdout.split()
    assert before == after  # what was imported, not what the file says now
    again = subprocess.run([sys.executable, "-c", script, str(code)], capture_output=True, text=True, cwd=tmp_path)
    assert again.stdout.split()[0] != before  # a new process imports the edited file


def test_only_a_stage_reruns_just_that_stage_and_reads_what_it_needs(smoke, tmp_path):
    """docs/usage.md's "rerun only the bank runs": --only and --force-retrain take the stage's name."""
    from lwsupcrd.options import StudyConfig, parse_args, validate

    out = tmp_path / "out"
    shutil.copytree(smoke["out"] / "pth_models", out / "pth_models")
    args = ["--preset", "smoke", "--data-dir", str(smoke["data"]), "--out-dir", str(out)]
    runs = {r.name: r for r in validate(parse_args(args, StudyConfig()))}
    bank = {n for n, r in runs.items() if r.stage == "bank_ablation"}
    needed, todo = set(), [d for n in bank for d in runs[n].requires]
    while todo:
        name = todo.pop()
        needed.add(name)
        todo += runs[name].requires
    assert bank and needed and len(bank | needed) < len(runs)
    res = subprocess.run([sys.executable, str(ROOT / "desupcon.py"), *args, "--only", "bank_ablation",
                          "--force-retrain", "bank_ablation", "--tensorboard"], capture_output=True, text=True,
                         env={**__import__("os").environ, "TQDM_DISABLE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert set(trained_runs(res.stdout)) == bank
    assert set(cached_runs(res.stdout)) == needed - bank
    from test_scalars import read_events

    boards = sorted((out / "tensorboard").iterdir())  # one folder per trained run, named by run and id
    assert [p.name.rsplit("-", 1)[0] for p in boards] == sorted(bank)
    epochs = runs[sorted(bank)[0]].cfg["epochs"]
    assert [step for step, _ in read_events(boards[0])["loss/loss"]] == list(range(1, epochs + 1))
