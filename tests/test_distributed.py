"""torchrun with 2 Gloo processes on the CPU: the same step as one process, identical banks,
and one set of outputs."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from helpers import ROOT, checkpoint_file, checkpoint_files, results_file, trained_runs, wait_for_line

sys.path.insert(0, os.path.dirname(__file__))
from ddp_setup import CFG, make_models, make_split  # noqa: E402

from lwsupcrd.data import crop_flip, crop_flip_params  # noqa: E402
from lwsupcrd.losses import kd_loss, lw_supcrd_loss  # noqa: E402
from lwsupcrd.memory_bank import MomentumMemoryBank  # noqa: E402


@pytest.fixture(autouse=True)
def launcher_tmpdir(tmp_path_factory, monkeypatch):
    """torchrun makes a torchelastic_* folder under TMPDIR and a killed launcher leaves it there:
    here it goes to pytest's own temporary folders, which pytest prunes."""
    monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("launcher")))


def torchrun(*args, timeout=300):
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def reference_first_step_loss(standard: bool = False):
    """The same global batch in one process. Without SyncBatchNorm (which needs CUDA) each rank
    normalises its own shard, so the reference forwards the two shards separately; per-rank terms
    (the standard protocol's CE and KD) are averaged over the ranks as the epoch log does."""
    train, info = make_split()
    student, teacher = make_models()
    student.train()
    teacher.eval()
    views = 1 if standard else 2
    gen = torch.Generator().manual_seed(CFG["seed"])
    perm = torch.randperm(16, generator=gen)
    params = [crop_flip_params(16, gen, "cpu") for _ in range(views)]
    bank = MomentumMemoryBank(16, 64, train.labels, momentum=0.5, seed=CFG["seed"])
    zs, ts, probs, labels, local = [], [], [], [], []
    for rank in range(2):
        mine = perm[rank * 8:(rank + 1) * 8]
        x = torch.cat([crop_flip(train.images[mine], [p[rank * 8:(rank + 1) * 8] for p in view], info)
                       for view in params])
        _, z, logits = student(x)
        zs.append(z)
        with torch.no_grad():
            f = teacher.backbone.forward_features(x)
            t_logits = teacher.classifier(f)
            probs.append(torch.softmax(t_logits, 1))
        ts.append(teacher.project(f))
        labels.append(train.labels[mine].repeat(views))
        local.append(F.cross_entropy(logits, train.labels[mine]) + kd_loss(logits, t_logits, 4.0) if standard else 0.0)
    keys, bank_labels, _ = bank.sample(CFG["bank_negatives"])
    lw = lw_supcrd_loss(torch.cat(zs), torch.cat(ts), torch.cat(labels), torch.cat(probs), 1.0, 10.0, 0.07, True, keys,
                        bank_labels)
    return float((sum(local) / 2 + 0.8 * lw).detach()) if standard else float(lw.detach())


@pytest.mark.parametrize("protocol", ["lwsupcrd", "standard"])
def test_two_process_step_matches_single_process_and_banks_agree(tmp_path, protocol):
    res = torchrun(ROOT / "tests" / "ddp_worker.py", tmp_path, protocol)
    assert res.returncode == 0, res.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pth", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pth", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    assert torch.equal(r0["bank"], r1["bank"])  # every rank applied the same global update
    for k in r0["student"]:
        assert torch.allclose(r0["student"][k], r1["student"][k], atol=1e-6), k  # gradients were averaged
    assert r0["loss"] == pytest.approx(reference_first_step_loss(protocol == "standard"), rel=1e-5)
    assert (tmp_path / "ddp.resume.pth").exists()


def test_torchrun_study_writes_one_set_of_outputs(smoke, tmp_path):
    name = "student_lwsupcrd_bank64_resnet8_cifar100"
    res = torchrun(ROOT / "desupcon.py", "--preset", "smoke", "--data-dir", smoke["data"], "--out-dir", tmp_path,
                   "--only", name, "--device", "cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    trained = trained_runs(res.stdout)
    assert trained == ["teacher_resnet8_cifar100", "teacher_resnet8_cifar100_with_projection", name]  # once each
    logs = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "json_results" / "training_logs").iterdir())
    assert logs == sorted(trained)
    assert not [p for p in tmp_path.rglob("*.tmp")]
    results = json.loads(results_file(tmp_path).read_text())
    assert set(results["runs"]) == set(trained)


@pytest.mark.slow
def test_torchrun_resume_after_sigkill_matches_uninterrupted_run(smoke, tmp_path):
    import shutil
    import time

    name = "student_lwsupcrd_bank64_resnet8_cifar100"
    base = tmp_path / "base"
    res = torchrun(ROOT / "desupcon.py", "--preset", "smoke", "--data-dir", smoke["data"], "--out-dir", base,
                   "--only", "teacher_resnet8_cifar100_with_projection", "--device", "cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    shutil.copytree(base, tmp_path / "killed")
    args = ["--preset", "smoke", "--data-dir", smoke["data"], "--only", name, "--device", "cpu", "--epochs", "5"]
    res = torchrun(ROOT / "desupcon.py", *args, "--out-dir", base)
    assert res.returncode == 0, res.stderr[-3000:]

    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "desupcon.py"), *map(str, args), "--out-dir", str(tmp_path / "killed")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
                            start_new_session=True, text=True)
    wait_for_line(proc, "epoch 1/5:")  # printed by rank 0 once that epoch's resume state is on disk
    # the launcher and both ranks (torchrun starts each rank in a session of its own)
    subprocess.run(["pkill", "-9", "-f", str(tmp_path / "killed")])
    proc.wait()
    time.sleep(0.5)
    assert not checkpoint_files(tmp_path / "killed", name)
    res = torchrun(ROOT / "desupcon.py", *args, "--out-dir", tmp_path / "killed")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming after epoch" in res.stdout
    from lwsupcrd.checkpoint import load_checkpoint

    a = load_checkpoint(checkpoint_file(base, name))
    b = load_checkpoint(checkpoint_file(tmp_path / "killed", name))
    assert a["weights_sha256"] == b["weights_sha256"]
