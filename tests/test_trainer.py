"""The trainer end to end on the tiny synthetic set: checkpoints, exact resume, DDP gradients."""
import csv
import os
import socket

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_stad.data.synth.generate import generate_dataset  # noqa: E402
from edge_stad.models import load_checkpoint, read_checkpoint  # noqa: E402
from edge_stad.train.trainer import TrainConfig, Trainer, _collate, epoch_batches  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("data") / "tiny", preset="tiny", seed=3)


def config(data, out, **kw):
    values = dict(data=str(data), out=str(out), K=2, clip_len=3, input_size=64, batch_size=2, epochs=3,
                  workers=0, log_every=1, val_every=0, progress=False, seed=5, schedule="constant", device="cpu")
    values.update(kw)
    return TrainConfig(**values)


def logged_losses(out):
    with open(os.path.join(out, "metrics.csv")) as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f) if r["kind"] == "train"}


def test_train_validate_checkpoint(tiny, tmp_path):
    result = Trainer(config(tiny, tmp_path, max_steps=4, val_every=1)).fit()
    assert result["stopped_early"] and result["history"][-1]["step"] == 4
    assert 0 <= result["history"][-1]["frame_mAP"] <= 100
    model = load_checkpoint(result["last"])
    assert model.config["K"] == 2 and model.config["input_size"] == [64, 64] and model.config["num_classes"] == 8
    meta = read_checkpoint(result["best"])["meta"]
    assert meta["train_config"]["seed"] == 5 and meta["step"] == 4 and meta["labels"][0] == "walk"
    assert sorted(logged_losses(tmp_path)) == [1, 2, 3, 4]


def test_resume_continues_exactly(tiny, tmp_path):
    straight = tmp_path / "straight"
    Trainer(config(tiny, straight, max_steps=3)).fit()
    split = tmp_path / "split"
    Trainer(config(tiny, split, max_steps=2)).fit()  # stops mid-epoch, last.pt at step 2
    assert read_checkpoint(split / "last.pt")["meta"]["batch_in_epoch"] == 2
    Trainer(config(tiny, split, max_steps=3, resume=str(split / "last.pt"))).fit()
    a, b = logged_losses(straight), logged_losses(split)
    assert a[1] == b[1] and a[2] == b[2]
    assert b[3] == a[3]  # the first step after resuming: same data, augmentation, weights and optimizer state


def test_resume_refuses_another_model(tiny, tmp_path):
    Trainer(config(tiny, tmp_path, max_steps=1)).fit()
    from edge_stad.errors import ConfigError

    with pytest.raises(ConfigError, match="different model"):
        Trainer(config(tiny, tmp_path, K=3, resume=str(tmp_path / "last.pt")))


def test_epoch_batches_are_disjoint_across_ranks():
    one = epoch_batches(20, 3, seed=1, epoch=4)
    shards = [epoch_batches(20, 3, seed=1, epoch=4, rank=r, world=2) for r in range(2)]
    flat = [i for s in shards for b in s for i in b]
    assert len(flat) == len(set(flat)) == 18 and len(shards[0]) == len(shards[1]) == 3
    assert epoch_batches(20, 3, seed=1, epoch=4) == one and epoch_batches(20, 3, seed=1, epoch=5) != one


def _grads_of_first_step(data, out, rank, world, port, model_kw):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(config(data, out, lr=0.0, weight_decay=0.0, **model_kw))
    # Frozen BatchNorm: on CPU each DDP process normalises with its own batch (PyTorch has no CPU
    # SyncBatchNorm), the one thing that legitimately differs from one process on the whole batch.
    trainer.model.eval()
    batch_size = trainer.cfg.batch_size
    if world == 1:  # the same samples the two ranks take, as one batch
        indices = [i for r in range(2) for i in epoch_batches(len(trainer.samples), batch_size, 5, 0, r, 2)[0]]
    else:
        indices = epoch_batches(len(trainer.samples), batch_size, 5, 0, rank, world)[0]
    trainer.train_step(_collate([trainer.samples[i] for i in indices]))
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters()}


def _ddp_worker(rank, data, out, port, model_kw):
    grads = _grads_of_first_step(data, out, rank, 2, port, model_kw)
    if rank == 0:
        torch.save(grads, os.path.join(out, "ddp_grads.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("model_kw", [{}, dict(model="stma-lite", width_3d=0.25)], ids=["amma", "stma-lite"])
def test_ddp_gloo_gradients_equal_one_process_on_the_whole_batch(tiny, tmp_path, model_kw):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(str(tiny), str(tmp_path), port, model_kw), nprocs=2)
    ddp = torch.load(tmp_path / "ddp_grads.pt", weights_only=True)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(key, None)
    single = _grads_of_first_step(tiny, tmp_path / "single", 0, 1, port, model_kw)
    assert set(ddp) == set(single)
    scale = max(float(g.abs().max()) for g in single.values())
    for name in single:
        np.testing.assert_allclose(ddp[name].numpy(), single[name].numpy(), atol=1e-5 * scale, rtol=1e-4,
                                   err_msg=name)


def test_linear_warmup_then_the_schedule():
    from edge_stad.train.presets import lr_factor, preset

    # 4 warm-up steps: 1/4, 2/4, 3/4, 4/4 of the schedule's value, then the schedule alone
    assert [lr_factor("constant", 0, 10, step=s, warmup=4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cosine = lr_factor("cosine", 5.0, 10, step=1)
    assert cosine == pytest.approx(0.5)
    assert lr_factor("cosine", 5.0, 10, step=1, warmup=4) == pytest.approx(0.5 * cosine)
    assert lr_factor("cosine", 5.0, 10, step=9, warmup=4) == cosine
    assert preset("demo", "shufflenetv2")["warmup"] > 0 and "warmup" not in preset("synthetic", "shufflenetv2")
