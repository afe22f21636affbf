"""The breaks a hostile user found (issue "No input ends in a traceback"), one test each: files
that are not what they claim, damaged results files, bad input that started work, and messages
that misled. Each failed on the code before its fix."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from helpers import ROOT
from lwsupcrd.cache import RunFiles, config_diff, other_config_note, read_cached, recorded_code
from lwsupcrd.checkpoint import CheckpointError, safe_load
from lwsupcrd.files import read_results, remove_stale_temps, save_torch
from lwsupcrd.locks import LockError, file_lock, holder
from lwsupcrd.options import StudyConfig, parse_args, validate


def test_a_pipe_where_a_checkpoint_should_be_is_named_and_never_opened(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: the file is refused before it is
    opened. A writer thread stands ready, so a reader that did open it would not hang this test."""
    fifo = tmp_path / "student-0123456789.pth"
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer():
        fd = os.open(fifo, os.O_WRONLY)  # returns once a reader opens the pipe
        opened.set()
        os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    with pytest.raises(CheckpointError, match="not a regular file"):
        safe_load(fifo)
    assert not opened.is_set()
    release = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader at last: the writer's open returns
    thread.join()
    os.close(release)


def test_a_checkpoint_header_of_the_wrong_shape_is_no_traceback(tmp_path):
    torch.save({"environment": {"code": "x"}}, tmp_path / "a.pth")
    assert recorded_code(tmp_path / "a.pth") is None
    assert config_diff([1, 2], {"a": 1}) == ["config: list -> dict"]
    from lwsupcrd.runs import Run

    files = RunFiles(tmp_path, {"run": Run("run", "teacher", {"a": 1})}, lambda run: run.cfg)
    files.models_dir.mkdir()
    torch.save({"config": [1, 2]}, files.models_dir / "run-0123456789.pth")
    assert other_config_note(files, "run", {"a": 1}).startswith("no checkpoint for this config")


def test_a_damaged_checkpoint_is_named_once(tmp_path, capsys):
    path = tmp_path / "x.pth"
    path.write_bytes(b"not a checkpoint")
    model, ckpt, why = read_cached(path, {}, lambda cfg: None, "cpu")
    assert model is None and str(path) in why and why.endswith("retraining")
    assert capsys.readouterr().out == ""  # the study's "training (why)" line is the only one


@pytest.mark.parametrize("content", [b"\xff\xfe{}", b"[]", b'"text"', b'{"settings": [], "runs": []}',
                                     b'{"settings": {}, "runs": []}', b'{"settings": {}, "runs": {"a": 1}}'])
def test_a_damaged_results_file_is_one_line_for_the_generators(tmp_path, content):
    path = tmp_path / "r.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=str(path)):
        read_results(path)
    for module in ("lwsupcrd.readme", "lwsupcrd.report"):
        done = subprocess.run([sys.executable, "-m", module, str(path)], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def smoke_study(tmp_path, *args):
    from lwsupcrd.study import Study

    cfg = parse_args(["--preset", "smoke", "--out-dir", str(tmp_path), *args], StudyConfig())
    return Study(cfg, validate(cfg))


@pytest.mark.parametrize("content", [b"\xff\xfe{}", b"[]", b'{"settings": {}, "runs": []}'])
def test_a_damaged_results_file_is_set_aside_not_overwritten(tmp_path, content, capsys):
    first = smoke_study(tmp_path)
    first.results_path.parent.mkdir(parents=True, exist_ok=True)
    first.results_path.write_bytes(content)
    study = smoke_study(tmp_path)
    assert study.results["runs"] == {} and not study.results_path.exists()
    kept = list(study.results_path.parent.glob("*.damaged-*.json"))
    assert len(kept) == 1 and kept[0].read_bytes() == content
    assert "kept as" in capsys.readouterr().out


def test_a_directory_where_the_results_file_should_be_stops_before_work(tmp_path):

    study = smoke_study(tmp_path)
    study.results_path.mkdir(parents=True)
    with pytest.raises(ValueError, match="not a regular file where the results file should be"):
        smoke_study(tmp_path)


def test_a_torch_writer_error_names_the_file(tmp_path, monkeypatch):
    def full_disk(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 576 vs 512")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as err:
        save_torch(tmp_path / "x.pth", {"a": 1})
    assert err.value.filename == str(tmp_path / "x.pth") and "disk may be full" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_temp_files_go_and_a_live_ones_stay(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".x.pth.{dead.stdout.strip()}.abcd1234.tmp"
    live = tmp_path / f".y.pth.{os.getpid()}.abcd1234.tmp"
    for path in (stale, live):
        path.write_text("half")
    assert remove_stale_temps(tmp_path) == [stale]
    assert live.exists() and not stale.exists()


def one_line_error(*args):
    done = subprocess.run([sys.executable, str(ROOT / "desupcon.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "TQDM_DISABLE": "1"})
    return done.returncode, done.stderr.strip().splitlines()


@pytest.mark.parametrize("args", [["--preset", "nosuch"], ["--epochs", "abc"], ["--device", "tpu"],
                                  ["--set", "nosuch=1"], ["--set", "student_lr=abc"], ["--only", ""],
                                  ["--seeds", "1", "1"], ["--set", "student_lr=inf"], ["--seed", "-1"]])
def test_bad_input_is_one_line_and_exit_code_2(args):
    rc, lines = one_line_error(*args, "--list")
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:") and "usage:" not in lines[0]


def test_an_infinite_learning_rate_is_refused_before_work(tmp_path):
    cfg = parse_args(["--preset", "smoke", "--out-dir", str(tmp_path), "--set", "student_lr=inf"], StudyConfig())
    with pytest.raises(ValueError, match="student_lr=inf is not allowed: student_lr takes a finite number > 0"):
        validate(cfg)


def test_an_unknown_run_names_the_number_that_list_prints(tmp_path):
    cfg = parse_args(["--preset", "smoke", "--out-dir", str(tmp_path), "--only", "nosuch"], StudyConfig())
    runs = len(validate(parse_args(["--preset", "smoke", "--out-dir", str(tmp_path)], StudyConfig())))
    with pytest.raises(ValueError, match=f"--list prints its {runs} runs"):
        validate(cfg)


def test_bad_input_leaves_no_empty_folders(tmp_path):
    out = tmp_path / "new" / "out"
    validate(parse_args(["--preset", "smoke", "--out-dir", str(out)], StudyConfig()))
    assert not (tmp_path / "new").exists()


def test_a_student_batch_larger_than_the_split_drawn_is_refused_before_training(tmp_path):
    from lwsupcrd.data import write_cifar_like

    data = write_cifar_like(tmp_path / "data", train_per_class=5, test_per_class=1)  # 500 images; the preset draws 1000
    study = smoke_study(tmp_path / "out", "--data-dir", str(data), "--set", "student_batch_size=600")
    with pytest.raises(ValueError, match="student batch size 600 exceeds the training split this study draws"):
        study.load_data()


def test_a_pipe_where_a_lock_should_be_is_refused(tmp_path):
    os.mkfifo(tmp_path / "x.lock")
    with pytest.raises(LockError, match="not a regular file"):
        with file_lock(tmp_path / "x.lock"):
            pass


def test_a_waiting_study_says_whom_it_waits_for(tmp_path):
    """A child holds the lock and says so; this process then waits, naming the child's pid, until the
    child lets go (it does when its stdin closes): events, not timers."""
    lock = tmp_path / "x.lock"
    child = subprocess.Popen([sys.executable, "-c", f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from lwsupcrd.locks import file_lock
with file_lock({str(lock)!r}):
    print("held", flush=True)
    sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    assert holder(lock) == str(child.pid)
    said = []

    def say(line):
        said.append(line)
        child.stdin.close()  # the message is out: let the child go

    with file_lock(lock, say=say) as held:
        assert held and holder(lock) == str(os.getpid())
    child.wait()
    assert said == [f"waiting for {lock}, held by pid {child.pid} (Ctrl-C stops waiting; every finished run is kept)"]


def tiny_fit(tmp_path, **kw):
    """One resnet8 student on 64 random images, two epochs, resumable."""
    from lwsupcrd.data import DATASETS, Split
    from lwsupcrd.models import ModelWrapper
    from lwsupcrd.train import fit

    info = DATASETS["fashion-mnist"]
    images = torch.randint(0, 256, (64, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    train = Split(images, torch.arange(64) % 10, torch.arange(64), [str(i) for i in range(10)])
    cfg = dict(method="supcon", arch="resnet8", num_classes=10, in_channels=1, proj_head="linear", epochs=2,
               batch_size=32, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant", temperature=0.07,
               seed=0)
    torch.manual_seed(0)
    model = ModelWrapper.from_config(cfg)
    history = fit("t", cfg, model, train, info, torch.device("cpu"), progress=False, **kw)
    return model, history


def interrupted_after_epoch_one(tmp_path):
    from lwsupcrd.train import TrainingInterrupted

    path = tmp_path / "t.resume.pth"
    with pytest.raises(TrainingInterrupted):
        tiny_fit(tmp_path, resume_path=path, on_epoch=lambda row: (_ for _ in ()).throw(KeyboardInterrupt()))
    return path


@pytest.mark.parametrize("damage", ["bit", "nan"])
def test_a_damaged_resume_state_is_set_aside_and_the_run_starts_over(tmp_path, damage, capsys):
    """One flipped bit in the middle of a tensor, or a NaN in the first convolution (checksum
    recomputed): never resumed from, kept under another name, and the run ends where an
    uninterrupted one does."""
    from lwsupcrd.checkpoint import content_sha256

    whole, _ = tiny_fit(tmp_path)
    path = interrupted_after_epoch_one(tmp_path)
    state = torch.load(path, weights_only=True)
    if damage == "nan":
        state["model"]["backbone.conv1.weight"][0, 0, 0, 0] = float("nan")
        state["sha256"] = content_sha256({k: v for k, v in state.items() if k != "sha256"})
        torch.save(state, path)
    else:
        raw = bytearray(path.read_bytes())
        weight = state["model"]["backbone.layer1.0.conv1.weight"].numpy().tobytes()
        at = bytes(raw).find(weight[:64]) + 32  # inside that tensor's bytes in the zip
        raw[at] ^= 0x10
        path.write_bytes(bytes(raw))
    resumed, history = tiny_fit(tmp_path, resume_path=path)
    out = capsys.readouterr().out
    assert "resume state not used" in out and ("checksum does not match" in out or "non-finite" in out)
    assert len(list(tmp_path.glob("t.damaged-*.resume.pth"))) == 1
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


@pytest.mark.parametrize("labels, says", [([None] * 10, "label 0 is None"), (["cat"] * 10, "label 0 is 'cat'"),
                                          ([0.5] * 10, "label 0 is 0.5")])
def test_labels_must_be_integers(tmp_path, labels, says):
    import pickle

    from lwsupcrd.data import DataError, load_split, write_cifar_like

    data = write_cifar_like(tmp_path / "data", train_per_class=1, test_per_class=1, num_classes=10)
    batch_file = data / "cifar-100-python" / "train"
    batch = pickle.loads(batch_file.read_bytes())
    batch["fine_labels"] = labels
    batch_file.write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError, match=f"{batch_file}: {says}"):
        load_split("cifar100", data, "train", download=False)


def test_a_teacher_file_must_fit_the_datasets_channels(tmp_path):
    from lwsupcrd.models import create_model
    from lwsupcrd.published import reference_state

    torch.save({"model": reference_state("resnet14", create_model("resnet14", 10))}, tmp_path / "t.pth")
    cfg = parse_args(["--protocol", "standard", "--preset", "smoke", "--dataset", "fashion-mnist", "--out-dir",
                      str(tmp_path), "--teacher-checkpoint", str(tmp_path / "t.pth")], StudyConfig())
    with pytest.raises(ValueError, match="does not fit resnet14 with 10 classes and 1 input channel"):
        validate(cfg)


def test_a_damaged_training_log_skips_its_curves_with_one_line(tmp_path, capsys):
    from lwsupcrd.analysis import _training_log

    log = tmp_path / "run.json"
    log.write_bytes(os.urandom(256))
    assert _training_log(log) is None and "is damaged" in capsys.readouterr().out
    log.write_text(json.dumps({"epochs": [{"epoch": 1, "loss": 1.0}]}))
    assert _training_log(log)["epochs"][0]["loss"] == 1.0


def test_fuzzed_resume_states_load_whole_or_are_named(tmp_path):
    """Every one of 300 single-byte changes to a sealed resume state either leaves what it restores
    unchanged or is one CheckpointError; none is resumed from in silence."""
    import random

    from lwsupcrd.checkpoint import content_sha256, open_sealed, seal

    path = tmp_path / "r.resume.pth"
    torch.manual_seed(0)
    state = {"model": {"w": torch.randn(64, 16), "b": torch.zeros(16)}, "epoch": 3,
             "rng": torch.randint(0, 255, (100,), dtype=torch.uint8), "history": [{"loss": 0.5}]}
    torch.save(seal(state), path)
    raw = path.read_bytes()
    expected = content_sha256(state)
    rng = random.Random(0)
    named = 0
    for _ in range(300):
        data = bytearray(raw)
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        try:
            assert content_sha256(open_sealed(path)) == expected
        except CheckpointError:
            named += 1
    assert named > 0


def test_an_unreadable_output_folder_is_named_before_work(tmp_path, monkeypatch):
    """`chmod 000 pth_models` for a user without DAC override (these tests run as root, whom no mode
    stops, so the permission check is made to answer as it would for such a user)."""
    (tmp_path / "pth_models").mkdir()
    (tmp_path / "pth_models").chmod(0)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p).name == "pth_models" else real(p, mode))
    cfg = parse_args(["--preset", "smoke", "--out-dir", str(tmp_path)], StudyConfig())
    with pytest.raises(ValueError, match=r"pth_models is not a folder this user can read and write .*0o0"):
        validate(cfg)
    (tmp_path / "pth_models").chmod(0o755)


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_before_the_first_run_is_one_line(tmp_path, sig):
    """The signal comes as soon as the study says it has its data (the floors are measured next):
    wherever it lands before training, one line and exit code 2, no traceback."""
    import signal

    from helpers import wait_for_line
    from lwsupcrd.data import write_cifar_like

    data = write_cifar_like(tmp_path / "data", train_per_class=5, test_per_class=2)
    # a child of a shell's background job inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: give the study the default disposition, as a terminal's Ctrl-C finds it
    proc = subprocess.Popen([sys.executable, str(ROOT / "desupcon.py"), "--preset", "smoke", "--data-dir", str(data),
                             "--out-dir", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_line(proc, "train: (")
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate()
    assert proc.returncode == 2 and "Traceback" not in err, err[-2000:]
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def test_fuzzed_results_files_are_read_whole_or_named(tmp_path):
    """300 single-byte changes to a committed results file: each is read as a results file or refused
    in one ValueError line by the generators' reader, never a traceback."""
    import random

    raw = (ROOT / "results" / "evidence" / "comprehensive_results_resnet8_fashion-mnist.json").read_bytes()
    path = tmp_path / "r.json"
    rng = random.Random(0)
    refused = 0
    for _ in range(300):
        data = bytearray(raw)
        data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            assert isinstance(read_results(path)["runs"], dict)
        except ValueError as err:
            assert str(path) in str(err) and "\n" not in str(err)
            refused += 1
    assert 0 < refused < 300  # most flips land in values and still read; the rest are named


def test_a_stop_no_handler_caught_is_one_line():
    """The script's last resort: a Ctrl-C or SIGTERM that lands where no handler waits for it."""
    for error in ("KeyboardInterrupt", "Terminated"):
        done = subprocess.run([sys.executable, "-c", f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from lwsupcrd.signals import Terminated, stop_on_sigterm
stop_on_sigterm()
raise {error}()
"""], capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr


@pytest.mark.slow
def test_a_full_disk_while_the_floors_are_saved_is_one_line(tmp_path):
    """RLIMIT_FSIZE makes the first file of any size (the results file, after the floors) fail with
    EFBIG, as a full disk would: one line naming it, exit code 2, and nothing half-written left."""
    import resource

    from lwsupcrd.data import write_cifar_like

    data = write_cifar_like(tmp_path / "data", train_per_class=5, test_per_class=2)

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    done = subprocess.run([sys.executable, str(ROOT / "desupcon.py"), "--preset", "smoke", "--data-dir", str(data),
                           "--out-dir", str(tmp_path / "out")], capture_output=True, text=True, preexec_fn=small_files,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.startswith("error: cannot write ") and "json_results" in done.stderr
    assert not list((tmp_path / "out").rglob("*.tmp"))
