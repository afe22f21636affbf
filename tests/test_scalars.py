"""--tensorboard: each run's per-epoch scalars, read back from the event file TensorBoard reads."""
import pytest

from lwsupcrd import scalars
from lwsupcrd.options import StudyConfig, parse_args, validate


def read_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, round(e.value, 5)) for e in events.Scalars(tag)]  # stored as float32
            for tag in events.Tags()["scalars"]}


def test_each_epoch_row_is_read_back_under_its_tag(tmp_path):
    rows = [{"epoch": 1, "loss": 2.5, "ce": 2.0, "lr": 0.05, "train_acc": 40.0, "test_acc": 38.5,
             "epoch_seconds": 4.0, "w.q_mean": 0.25},
            {"epoch": 2, "loss": 1.5, "ce": 1.25, "lr": 0.025, "train_acc": 60.0, "epoch_seconds": 2.0,
             "w.q_mean": 0.5, "nan_part": float("nan")}]
    writer = scalars.epoch_scalars(True, tmp_path / "run-0123456789", images_per_epoch=1000)
    for row in rows:
        writer(row)
    writer.close()
    got = read_events(tmp_path / "run-0123456789")
    assert got["loss/loss"] == [(1, 2.5), (2, 1.5)] and got["loss/ce"] == [(1, 2.0), (2, 1.25)]
    assert got["optimizer/lr"] == [(1, 0.05), (2, 0.025)]
    assert got["accuracy/train_acc"] == [(1, 40.0), (2, 60.0)] and got["accuracy/test_acc"] == [(1, 38.5)]
    assert got["lwsupcrd_weights/q_mean"] == [(1, 0.25), (2, 0.5)]
    assert got["time/images_per_second"] == [(1, 250.0), (2, 500.0)]
    assert "loss/nan_part" not in got  # a non-finite value is left out, not written


def test_without_the_flag_nothing_is_written(tmp_path):
    writer = scalars.epoch_scalars(False, tmp_path / "run", images_per_epoch=10)
    writer({"epoch": 1, "loss": 1.0, "epoch_seconds": 1.0})
    writer.close()
    assert not any(tmp_path.iterdir())


def test_without_tensorboard_installed_the_flag_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(scalars, "available", lambda: False)
    cfg = parse_args(["--preset", "smoke", "--out-dir", str(tmp_path), "--tensorboard"], StudyConfig())
    with pytest.raises(ValueError, match="--tensorboard needs the tensorboard package") as err:
        validate(cfg)
    assert "\n" not in str(err.value) and not any(tmp_path.iterdir())
