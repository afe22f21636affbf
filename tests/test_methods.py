"""Every method of the registry trains, and resumes bit-exactly after an interruption with its
extra modules and state (FitNet's regressor, CRD's memories and Z, the banks) restored."""
import pytest
import torch

from lwsupcrd.checkpoint import safe_load
from lwsupcrd.data import DATASETS, Split
from lwsupcrd.methods import STANDARD, TERMS, build_extras, method_of, start_from_initialisation
from lwsupcrd.models import ModelWrapper
from lwsupcrd.options import StudyConfig
from lwsupcrd.protocol import build_standard_runs, left_out
from lwsupcrd.train import TrainingInterrupted, fit

INFO = DATASETS["cifar10"]


def tiny_split(n=64):
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(n) % 10,
                 torch.arange(n), [str(i) for i in range(10)])


def config_of(name, stage="distillation", pair="resnet8-resnet8"):
    """The smoke preset's config of a standard method's run of `stage` (a two-stage method's
    "initialisation" too) for `pair`, on two epochs of 64 images."""
    settings = StudyConfig(protocol="standard", preset="smoke", pair=pair).settings()
    settings.update(dataset="cifar10", bank_negatives=16)
    run = next(r for r in build_standard_runs(settings) if r.stage == stage and r.cfg["recipe"] == name)
    # an untrained teacher on random images: at ShuffleV1's lr 0.01, DKD's term (beta 8, x T^2) diverges
    # within four steps; what is tested here is the resume, so the cross-architecture pair steps gently
    lr = run.cfg["lr"] if pair == "resnet8-resnet8" else 1e-3
    return dict(run.cfg, epochs=2, batch_size=16, lr_milestones=[1], num_classes=10, lr=lr)


TWO_STAGE = [name for name, m in STANDARD.items() if m.init is not None]
# a same-architecture pair and a cross-architecture one (as RepDistiller's resnet32x4 -> ShuffleV1, small)
SMOKE_PAIRS = ("resnet8-resnet8", "resnet8-ShuffleV1")
CASES = [(pair, f"{n}:{stage}") for pair in SMOKE_PAIRS for stage in ("distillation", "initialisation")
         for n in (STANDARD if stage == "distillation" else TWO_STAGE)
         if n not in left_out(dict(StudyConfig(protocol="standard", preset="smoke", pair=pair).settings()))]


def networks_of(cfg, train, teacher_arch="resnet8"):
    torch.manual_seed(0)
    student = ModelWrapper.from_config(cfg)
    teacher = ModelWrapper.from_config(dict(cfg, arch=teacher_arch)) if method_of(cfg).needs_teacher else None
    if teacher is not None:
        teacher.requires_grad_(False)
        teacher.projection.requires_grad_(True)
    return student, teacher, build_extras(cfg, student, teacher, train)


@pytest.mark.slow
@pytest.mark.parametrize("pair, name", CASES)
def test_every_method_resumes_bit_exactly_with_its_extras(tmp_path, pair, name):
    """Trained straight, then interrupted after its first epoch and resumed into networks built afresh.
    The interruption writes nothing beyond the state saved at every epoch's end, so the resume starts from
    what a kill leaves (a SIGKILL through the CLI: test_reliability, for FT and the bank student)."""
    cfg, train = config_of(*name.split(":"), pair), tiny_split()
    cpu = torch.device("cpu")

    def networks(cfg, train):
        return networks_of(cfg, train, pair.split("-")[0])

    student, teacher, extras = networks(cfg, train)
    straight = fit("run", cfg, student, train, INFO, cpu, teacher=teacher, progress=False, extras=extras)
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in straight)
    init = STANDARD[cfg["recipe"]].init if cfg["method"] == "initialisation" else None
    term = TERMS[method_of(cfg).term] if method_of(cfg).term else None
    assert (extras is not None) == (init.build is not None if init else term is not None and term.build is not None)

    def stop_after_first(row):
        raise KeyboardInterrupt

    resume = tmp_path / "run.resume.pth"
    s2, t2, e2 = networks(cfg, train)
    with pytest.raises(TrainingInterrupted, match="epoch 1 is saved"):
        fit("run", cfg, s2, train, INFO, cpu, teacher=t2, resume_path=resume, on_epoch=stop_after_first,
            progress=False, extras=e2)
    state = safe_load(resume)
    assert ("extras" in state) == (extras is not None)
    s3, t3, e3 = networks(cfg, train)
    fit("run", cfg, s3, train, INFO, cpu, teacher=t3, resume_path=resume, progress=False, extras=e3)
    for k, v in student.state_dict().items():
        assert torch.equal(v, s3.state_dict()[k]), k
    if extras is not None:
        for k, v in extras.state_dict().items():
            assert torch.equal(v, e3.state_dict()[k]), k
    if teacher is not None:
        for k, v in teacher.projection.state_dict().items():
            assert torch.equal(v, t3.projection.state_dict()[k]), k


def test_distillation_starts_from_its_initialisation_and_refuses_a_stray_module():
    train = tiny_split()
    init_cfg, cfg = config_of("ft", "initialisation"), config_of("ft")
    init_student, teacher, init_extras = networks_of(init_cfg, train)
    with torch.no_grad():
        for p in [*init_student.parameters(), *init_extras.parameters()]:
            p.add_(1.0)
    student, _, extras = networks_of(cfg, train)
    translator = {k: v.clone() for k, v in extras["translator"].state_dict().items()}
    start_from_initialisation("run", student, extras, init_student, init_extras.state_dict())
    for k, v in init_student.state_dict().items():
        assert torch.equal(v, student.state_dict()[k]), k
    for k, v in init_extras["paraphraser"].state_dict().items():
        assert torch.equal(v, extras["paraphraser"].state_dict()[k]), k
    for k, v in translator.items():  # no counterpart in the initialisation: as built
        assert torch.equal(v, extras["translator"].state_dict()[k]), k
    stray = {**init_extras.state_dict(), "connector.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError, match=r"\[run\] its initialisation holds modules it has no place for.*connector"):
        start_from_initialisation("run", student, extras, init_student, stray)


def test_crd_fixes_z_on_the_first_batch_and_keeps_it():
    cfg, train = config_of("crd"), tiny_split()
    student, teacher, extras = networks_of(cfg, train)
    assert (extras.z < 0).all()
    fit("run", dict(cfg, epochs=1), student, train, INFO, torch.device("cpu"), teacher=teacher, progress=False,
        extras=extras)
    z = extras.z.clone()
    assert (z > 0).all()
    fit("run", dict(cfg, epochs=1), student, train, INFO, torch.device("cpu"), teacher=teacher, progress=False,
        extras=extras)
    assert torch.equal(extras.z, z)


def test_both_protocols_runs_are_rows_of_the_one_registry():
    """Every run of every preset of either protocol names a row of `METHODS`, which gives its step,
    views and teacher; the original protocol's rows are its own, not the benchmark's."""
    from lwsupcrd.methods import METHODS, method_of, step_of
    from lwsupcrd.protocol import PRESETS, STANDARD_PRESETS, build_study_runs
    from lwsupcrd.steps import step_lwsupcrd, step_supcon

    for protocol, presets in (("lwsupcrd", PRESETS), ("standard", STANDARD_PRESETS)):
        for preset in presets:
            settings = StudyConfig(protocol=protocol, preset=preset).settings()
            for run in build_study_runs(settings, settings.get("seeds")):
                method = method_of(run.cfg)
                assert method is METHODS[method.key]
                assert method.protocol in (protocol, "both"), (run.name, method.key)
                if protocol == "lwsupcrd":
                    assert (run.teacher is not None) == method.needs_teacher, run.name
                if method.name != "published":
                    assert callable(step_of(run.cfg))
    original = method_of({"method": "lwsupcrd"})
    assert original.key == "lwsupcrd/lwsupcrd" and original is not STANDARD["lwsupcrd"] and original.views == 2
    assert original.trains_teacher_head and not method_of({"method": "supcon"}).needs_teacher
    assert step_of({"method": "standard", "recipe": "lwsupcrd"}).__name__ == "standard_step"
    assert original.step.__wrapped__ is step_lwsupcrd
    assert method_of({"method": "supcon"}).step.__wrapped__ is step_supcon
    with pytest.raises(ValueError, match="unknown method 'lwsupcrd/nope'"):
        method_of({"method": "nope"})


def test_two_stage_modules_load_repdistillers_state_and_match_its_outputs():
    """AB's connectors, FT's paraphraser and translator against RepDistiller's Connector, Paraphraser
    and Translator (scripts/record_connector_fixture.py, its commit in the fixture): its seeded state
    dicts load key for key (the connector's under its `connectors.` prefix), and the outputs and the
    input gradients agree in float64, in training mode."""
    from helpers import ROOT
    from lwsupcrd.connectors import HintRegressor, Paraphraser, Translator

    fixture = safe_load(ROOT / "tests" / "fixtures" / "repdistiller_connectors.pt")
    assert fixture["commit"] == "b84f547"
    s_maps = fixture["connector"]["inputs"]
    t_shapes = [o.shape for o in fixture["connector"]["outputs"]]
    connector = torch.nn.ModuleList([torch.nn.Identity() if s.shape[1:3] == t[1:3] else HintRegressor(s.shape, t, relu=False)
                                     for s, t in zip(s_maps, t_shapes)])
    state = {k.removeprefix("connectors."): v for k, v in fixture["connector"]["state"].items()}
    t_map = fixture["paraphraser"]["inputs"][0]
    modules = {"connector": (connector, state, lambda m, x: [c(f) for c, f in zip(m, x)]),
               "paraphraser": (Paraphraser(t_map.shape[1]), fixture["paraphraser"]["state"],
                               lambda m, x: [m(x[0]), m.reconstruct(x[0])]),
               "translator": (Translator(s_maps[1].shape[1], t_map.shape[1]), fixture["translator"]["state"],
                              lambda m, x: [m(x[0])])}
    for name, (module, state, outputs_of) in modules.items():
        module = module.double().train()
        module.load_state_dict(state, strict=True)
        inputs = [x.clone().requires_grad_() for x in fixture[name]["inputs"]]
        outs = outputs_of(module, inputs)
        grads = torch.autograd.grad(sum(o.sum() for o in outs), inputs)
        for ours, theirs in zip(outs + list(grads), fixture[name]["outputs"] + fixture[name]["grads"], strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("name, trains_student", [("ab", True), ("ft", False), ("fsp", True)])
def test_an_initialisation_trains_only_what_repdistillers_init_trains(name, trains_student):
    """RepDistiller's `init`: AB trains its connectors and the student's feature modules, FSP the
    feature modules, FT only the teacher's paraphraser; the student's classifier and head, and the
    teacher, never move; the objective alone is the loss."""
    cfg, train = config_of(name, "initialisation"), tiny_split()
    student, teacher, extras = networks_of(cfg, train)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    e_before = None if extras is None else {k: v.clone() for k, v in extras.state_dict().items()}
    rows = fit("run", cfg, student, train, INFO, torch.device("cpu"), teacher=teacher, progress=False, extras=extras)
    assert set(rows[-1]) >= {"loss", "init"} and rows[-1]["loss"] == rows[-1]["init"] and "train_acc" not in rows[-1]
    moved = {k for k, v in student.state_dict().items() if not torch.equal(v, before[k])}
    assert all(not k.startswith(("projection", "backbone.fc", "backbone.linear", "backbone.classifier")) for k in moved)
    assert bool(moved) == trains_student
    assert all(torch.equal(v, t_before[k]) for k, v in teacher.state_dict().items())
    if extras is not None and list(extras.parameters()):  # AB's connectors between equal shapes are identities
        assert any(not torch.equal(v, e_before[k]) for k, v in extras.state_dict().items())


def test_lwsupcrd_runs_in_both_forms_beside_cross_entropy():
    """The standard protocol's LW-SupCRD rows: the per-positive form (ours) and the original code's
    anchor form (its own key among the positives), each the very loss of its form on the step's inputs."""
    from types import SimpleNamespace

    from lwsupcrd.losses import lw_supcrd_loss
    from lwsupcrd.original_losses import lw_supcrd_anchor_loss
    from lwsupcrd.terms import Outputs

    g = torch.Generator().manual_seed(0)
    z, pooled, logits = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g), torch.randn(8, 4, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    teacher = SimpleNamespace(project=lambda f: torch.nn.functional.normalize(f, dim=1))  # a head: unit keys
    batch = SimpleNamespace(labels=labels, slots=torch.arange(8))
    out = Outputs(logits, torch.nn.functional.normalize(z, dim=1), None, logits, pooled, None)
    keys, probs = teacher.project(pooled), torch.softmax(logits, 1)
    for name, expected in (("lwsupcrd", lambda c: lw_supcrd_loss(out.embedding, keys, labels, probs, c["alpha"], c["beta"],
                                                                  c["temperature"], c["adaptive_beta"])),
                           ("lwsupcrd_anchor", lambda c: lw_supcrd_anchor_loss(out.embedding, keys, labels, probs,
                                                                                c["alpha"], c["beta"], c["temperature"],
                                                                                c["adaptive_beta"], own_key=True))):
        cfg = config_of(name)
        ctx = SimpleNamespace(cfg=cfg, bank=None, teacher=teacher)
        loss = TERMS[STANDARD[name].term].loss(ctx, batch, out)[0]
        assert cfg["gamma"] == 1.0 and cfg["distill_weight"] == 0.8
        torch.testing.assert_close(loss, expected(cfg), rtol=1e-6, atol=0)
