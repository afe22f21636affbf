"""Kills, corrupt files, unsafe pickles, NaN, Ctrl-C, bad input, and the frozen teacher."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT, checkpoint_file, checkpoint_files, run_script, trained_runs, wait_for_line
from lwsupcrd.checkpoint import CheckpointError, load_checkpoint, safe_load, save_checkpoint
from lwsupcrd.files import atomic_write
from lwsupcrd.data import DATASETS, load_split, write_cifar_like
from lwsupcrd.models import ModelWrapper
from lwsupcrd.train import NonFiniteError, check_frozen, fit, frozen_snapshot

STUDENT = "student_lwsupcrd_bank64_resnet8_cifar100"
PROJ = "teacher_resnet8_cifar100_with_projection"


def test_atomic_write_keeps_old_file_when_writer_dies(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"a": 1}, path)

    def dies(tmp):
        Path(tmp).write_bytes(b"half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies)
    assert torch.load(path, weights_only=True) == {"a": 1}
    assert list(tmp_path.iterdir()) == [path]


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/lwsupcrd_pwned_marker")


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    MARKER.unlink(missing_ok=True)
    evil = tmp_path / "evil.pth"
    torch.save({"format": "lwsupcrd-checkpoint-v1", "state_dict": {}, "payload": RunsCode()}, evil)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(evil)
    assert not MARKER.exists()


def test_truncated_and_tampered_checkpoints_are_named(tmp_path):
    model = ModelWrapper("resnet8", 10)
    good = tmp_path / "good.pth"
    save_checkpoint(good, model.state_dict(), {"arch": "resnet8"})
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth: unreadable or truncated"):
        load_checkpoint(truncated)
    ckpt = safe_load(good)
    ckpt["state_dict"]["backbone.fc.bias"] += 1
    tampered = tmp_path / "tampered.pth"
    torch.save(ckpt, tampered)
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(tampered)


def test_non_finite_weights_are_never_saved(tmp_path):
    model = ModelWrapper("resnet8", 10)
    with torch.no_grad():
        model.backbone.fc.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(tmp_path / "bad.pth", model.state_dict(), {})
    assert not (tmp_path / "bad.pth").exists()


def small_fit_setup(tmp_path, epochs=2):
    data = write_cifar_like(tmp_path / "data", train_per_class=1, test_per_class=1)
    train = load_split("cifar100", data, "train")
    info = DATASETS["cifar100"]
    cfg = dict(method="supcon", arch="resnet8", epochs=epochs, batch_size=25, optimizer="adam", lr=1e-3,
               weight_decay=0.0, schedule="constant", temperature=0.07, seed=0)
    torch.manual_seed(0)
    return ModelWrapper("resnet8", 100), train, info, cfg


def test_nan_stops_the_run_naming_epoch_and_step_and_keeps_last_good_state(tmp_path):
    model, train, info, cfg = small_fit_setup(tmp_path)
    resume = tmp_path / "run.resume.pth"

    def poison(row):
        with torch.no_grad():
            model.backbone.conv1.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteError, match=r"\[myrun\] non-finite loss at epoch 2, step 1: supcon=nan"):
        fit("myrun", cfg, model, train, info, torch.device("cpu"), resume_path=resume, on_epoch=poison,
            progress=False)
    state = safe_load(resume)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_frozen_check_catches_a_moved_statistic():
    teacher = ModelWrapper("resnet8", 10).backbone
    before = frozen_snapshot(teacher)
    check_frozen("run", before, teacher)
    teacher.train()
    teacher(torch.randn(4, 3, 32, 32))  # a forward pass in train mode moves the BatchNorm statistics
    with pytest.raises(RuntimeError, match="frozen teacher backbone changed.*running_mean"):
        check_frozen("run", before, teacher)


@pytest.fixture()
def prepared(tmp_path):
    """Prerequisites of the bank student trained once; two out-dirs start from copies of them."""
    data = write_cifar_like(tmp_path / "data", train_per_class=5, test_per_class=2)
    base = tmp_path / "base"
    res = run_script("--preset", "smoke", "--data-dir", data, "--out-dir", base, "--only", PROJ)
    assert res.returncode == 0, res.stderr[-2000:]
    dirs = {}
    for name in ("straight", "killed"):
        shutil.copytree(base, tmp_path / name)
        dirs[name] = tmp_path / name
    return data, dirs


def student_cmd(data, out, epochs=4):
    return [sys.executable, str(ROOT / "desupcon.py"), "--preset", "smoke", "--data-dir", str(data),
            "--out-dir", str(out), "--only", STUDENT, "--epochs", str(epochs)]


def wait_for_epoch(proc):
    """Until the child prints its first finished epoch: its resume state is then on disk."""
    wait_for_line(proc, "   epoch 1/")


def test_sigkill_mid_epoch_then_resume_is_bit_exact(prepared):
    data, dirs = prepared
    env = {**os.environ, "TQDM_DISABLE": "1"}
    straight = subprocess.run(student_cmd(data, dirs["straight"]), capture_output=True, text=True, env=env)
    assert straight.returncode == 0, straight.stderr[-2000:]

    proc = subprocess.Popen(student_cmd(data, dirs["killed"]), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, text=True)
    wait_for_epoch(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resume = checkpoint_file(dirs["killed"], STUDENT, ".resume.pth")
    assert not checkpoint_files(dirs["killed"], STUDENT)
    again = subprocess.run(student_cmd(data, dirs["killed"]), capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"[{STUDENT}] resuming after epoch" in again.stdout

    a = load_checkpoint(checkpoint_file(dirs["straight"], STUDENT))
    b = load_checkpoint(checkpoint_file(dirs["killed"], STUDENT))
    differing = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differing and a["weights_sha256"] == b["weights_sha256"], \
        f"resumed weights differ in {differing[:8]}; {again.stdout.splitlines()[-1:]}\n" + epoch_rows(dirs)
    assert not resume.exists()


def epoch_rows(dirs) -> str:
    """Each run's per-epoch losses and seconds at full precision: where a resumed run first parts."""
    rows = []
    for name, out in dirs.items():
        log = json.loads(next((out / "json_results" / "training_logs").glob(f"{STUDENT}-*.json")).read_text())
        rows += [f"{name} {r['epoch']}: " + ", ".join(f"{k} {v!r}" for k, v in r.items()
                                                      if isinstance(v, float) and not k.startswith("w."))
                 for r in log["epochs"]]
    return "\n".join(rows)


@pytest.mark.parametrize("sig,said", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "stopped by SIGTERM")])
def test_ctrl_c_or_sigterm_saves_and_says_how_to_resume(prepared, sig, said):
    data, dirs = prepared
    env = {**os.environ, "TQDM_DISABLE": "1"}
    # enough epochs that the signal lands in training even when an epoch takes a fraction of a second
    cmd = student_cmd(data, dirs["killed"], epochs=40)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    wait_for_epoch(proc)
    proc.send_signal(sig)
    out, err = proc.communicate()  # the child's exit is the event: no deadline
    assert proc.returncode == 2, err[-2000:]
    saved = re.search(rf"{said}; epoch (\d+) is saved in", err)
    assert saved and "Rerun the same command to resume" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and f"resuming after epoch {saved.group(1)}" in again.stdout


def test_corrupt_or_malicious_cached_checkpoint_is_reported_and_retrained(smoke, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(smoke["out"], out)
    name = "student_baseline_supcon_resnet8_cifar100"
    path = checkpoint_file(out, name)
    path.write_bytes(path.read_bytes()[:1000])
    res = run_script("--preset", "smoke", "--data-dir", smoke["data"], "--out-dir", out, "--only", name)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{path}: unreadable or truncated checkpoint" in res.stdout
    assert trained_runs(res.stdout) == [name]
    load_checkpoint(path)

    MARKER.unlink(missing_ok=True)
    torch.save({"format": "lwsupcrd-checkpoint-v1", "state_dict": RunsCode()}, path)
    res = run_script("--preset", "smoke", "--data-dir", smoke["data"], "--out-dir", out, "--only", name)
    assert res.returncode == 0 and "refused to load" in res.stdout and not MARKER.exists()


def test_unreadable_data_file_is_one_line(tmp_path):
    data = write_cifar_like(tmp_path / "data", train_per_class=2, test_per_class=1)
    (data / "cifar-100-python" / "train").write_bytes(b"\x80\x04garbage")
    res = run_script("--preset", "smoke", "--data-dir", data, "--out-dir", tmp_path / "out")
    assert res.returncode == 2 and "cannot read" in res.stderr and "Traceback" not in res.stderr


def test_bank_larger_than_training_set_is_refused(tmp_path):
    data = write_cifar_like(tmp_path / "data", train_per_class=1, test_per_class=1, num_classes=50)
    res = run_script("--preset", "smoke", "--data-dir", data, "--out-dir", tmp_path / "out", "--batch-size", "16")
    assert res.returncode == 2 and "bank negatives 64 exceed the bank size" in res.stderr
    assert not list((tmp_path / "out" / "pth_models").glob("*.pth"))


@pytest.mark.parametrize("key,value,message", [("temperature", 0.0, "temperature"), ("alpha", 0.0, "alpha"),
                                               ("beta", -1.0, "beta")])
def test_invalid_hyperparameters_stop_before_training(monkeypatch, tmp_path, key, value, message):
    from lwsupcrd import options, protocol

    original = protocol.build_runs

    def patched(settings):
        runs = original(settings)
        for r in runs:
            if key in r.cfg:
                r.cfg[key] = value
        return runs

    monkeypatch.setattr(protocol, "build_runs", patched)
    with pytest.raises(ValueError, match=f"{message}.*got {value}"):
        options.validate(options.StudyConfig(preset="smoke", out_dir=str(tmp_path)))


def _garbage(rng, good: bytes) -> list[bytes]:
    """Files that are no checkpoint: random bytes, text, broken zips and pickles, and the real
    checkpoint's own pieces out of place."""
    files = [b"", b"hello\n", b"PK\x03\x04", b"\x80\x02", b"\x80\x02}q\x00.", b"\x80\x04\x95" + b"\xff" * 8]
    for _ in range(300):
        n = rng.choice([1, 7, 64, 513, 4096])
        prefix = rng.choice([b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x04\x95", good[:rng.randrange(1, 200)]])
        files.append(prefix + bytes(rng.randrange(256) for _ in range(n)))
    return files


def test_fuzz_no_unreadable_checkpoint_escapes_as_anything_but_one_named_error(tmp_path):
    """Garbage files and byte-flipped real checkpoints: each either loads as the original, whole and
    verified, or is one CheckpointError naming the file; never another exception."""
    import random

    model = ModelWrapper("resnet8", 10)
    good_path = tmp_path / "good.pth"
    original = save_checkpoint(good_path, model.state_dict(), {"arch": "resnet8"}, {"probe_test_acc": 50.0},
                               extra={"teacher_projection": model.projection.state_dict()})
    good = good_path.read_bytes()
    rng = random.Random(0)
    flipped = []
    for i in range(600):  # half within the header and pickle (the first 4 kB), half anywhere
        data = bytearray(good)
        for _ in range(rng.choice([1, 1, 2, 8])):
            j = rng.randrange(4096) if i % 2 else rng.randrange(len(data))
            data[j] ^= 1 << rng.randrange(8)
        flipped.append(bytes(data))
    path = tmp_path / "run.pth"
    loaded = 0
    for data in _garbage(rng, good) + flipped:
        path.write_bytes(data)
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as err:
            assert str(err).startswith(str(path)), err
            continue
        assert ckpt["sha256"] == original["sha256"]  # a flip the format ignores: the content is the original
        loaded += 1
    assert loaded < len(flipped) // 10


def test_restore_reads_resume_state_onto_the_cpu_whatever_the_run_device(tmp_path):
    """A resume file mapped to the run's device would hold non-CPU RNG states, which
    torch.set_rng_state refuses; the restore reads it onto the CPU (here the 'device' is meta, on
    which no tensor can serve as generator state, as on CUDA)."""
    from lwsupcrd.checkpoint import rng_state
    from lwsupcrd.optimizers import build_optimizer, build_scheduler
    from lwsupcrd.train import Execution, Loop

    model, train, info, cfg = small_fit_setup(tmp_path, epochs=2)
    resume = tmp_path / "run.resume.pth"
    fit("run", dict(cfg, epochs=1), model, train, info, torch.device("cpu"), resume_path=resume, progress=False)
    saved = safe_load(resume)
    fresh = ModelWrapper("resnet8", 100)
    optimizer = build_optimizer(dict(cfg, epochs=1), fresh.parameters())
    generator = torch.Generator()
    loop = Loop("run", dict(cfg, epochs=1), fresh, None, None, list(fresh.parameters()), optimizer,
                build_scheduler(dict(cfg, epochs=1), optimizer), generator, Execution.for_device(torch.device("cpu")))
    assert loop.restore(resume, torch.device("meta")) == 1
    assert torch.equal(rng_state(generator)["augment"], saved["rng"]["augment"])
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, saved["model"][k]), k


def test_outputs_get_the_permissions_the_umask_gives(tmp_path):
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    path = tmp_path / "x.json"
    atomic_write(path, lambda tmp: Path(tmp).write_text("{}"))
    save_checkpoint(tmp_path / "m.pth", ModelWrapper("resnet8", 10).state_dict(), {})
    for p in (path, tmp_path / "m.pth"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask  # mkstemp alone would give 0600


@pytest.mark.parametrize("split,label", [("test", -1), ("train", 150)])
def test_a_label_outside_the_classes_is_one_line_before_any_work(tmp_path, split, label):
    import pickle

    data = write_cifar_like(tmp_path / "data", train_per_class=2, test_per_class=1)
    path = data / "cifar-100-python" / split
    batch = pickle.loads(path.read_bytes())
    batch["fine_labels"][3] = label
    path.write_bytes(pickle.dumps(batch))
    res = run_script("--preset", "smoke", "--data-dir", data, "--out-dir", tmp_path / "out")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"cifar100 {split} split in {path.parent}: label {label} of image 3 is outside [0, 99]" in res.stderr
    assert not list((tmp_path / "out").rglob("*.json"))


def test_an_incomplete_fashion_mnist_folder_is_named_never_replaced(tmp_path):
    folder = tmp_path / "fm"
    folder.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (folder / f"{stem}.gz").write_bytes(b"")
    res = run_script("--preset", "smoke", "--dataset", "fashion-mnist", "--data-dir", folder,
                     "--out-dir", tmp_path / "out")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"fashion-mnist in {folder} is incomplete: missing t10k-labels-idx1-ubyte[.gz]" in res.stderr


def test_a_text_file_as_teacher_checkpoint_is_one_line(tmp_path):
    text = tmp_path / "teacher.pth"
    text.write_text("hello\n")
    res = run_script("--protocol", "standard", "--preset", "smoke", "--teacher-checkpoint", text,
                     "--out-dir", tmp_path / "out")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{text}: unreadable or truncated checkpoint" in res.stderr


@pytest.mark.slow
def test_a_two_stage_method_killed_mid_distillation_resumes_bit_exactly(tmp_path):
    """FT on the standard smoke preset: its initialisation (the paraphraser) is cached, its
    distillation is SIGKILLed after an epoch and rerun; the student, the translator and the frozen
    paraphraser end bit for bit where an uninterrupted run's do (the resume state wins over the
    initialisation it started from)."""
    data = write_cifar_like(tmp_path / "data", train_per_class=5, test_per_class=2)
    run = "std_ft_resnet8_from_resnet14_cifar100"
    env = {**os.environ, "TQDM_DISABLE": "1"}

    def cmd(out):
        return [sys.executable, str(ROOT / "desupcon.py"), "--protocol", "standard", "--preset", "smoke",
                "--data-dir", str(data), "--out-dir", str(out), "--only", run, "--set", "student_epochs=4"]

    straight = subprocess.run(cmd(tmp_path / "straight"), capture_output=True, text=True, env=env)
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert "== std_ft_init_resnet8_from_resnet14_cifar100: trained" in straight.stdout
    proc = subprocess.Popen(cmd(tmp_path / "killed"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            text=True)
    wait_for_line(proc, f"== {run}: training")
    wait_for_line(proc, "   epoch 1/")  # the distillation's first epoch: its resume state is on disk
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = subprocess.run(cmd(tmp_path / "killed"), capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"[{run}] resuming after epoch" in again.stdout and "std_ft_init_resnet8_from_resnet14_cifar100: cached" \
        in again.stdout
    a, b = (load_checkpoint(checkpoint_file(tmp_path / d, run)) for d in ("straight", "killed"))
    assert a["weights_sha256"] == b["weights_sha256"]
    assert all(torch.equal(v, b["method_state"][k]) for k, v in a["method_state"].items())
