"""MoCo v2 low-resolution fine-tuning: a few real steps on CPU with a tiny ResNet; its CLI's errors."""
import os

import numpy as np
import torch
from PIL import Image

from cnf_jax.extract import backbones, moco_finetune, sources
from extract_util import make_folder, save_moco_checkpoint

TINY = {"layers": (1, 1, 1, 1), "width": 8}  # Bottleneck ResNet with 256-d trunk output.


def test_aug_plus_views_are_random_and_well_formed():
  rng = np.random.default_rng(0)
  image = moco_finetune.low_res(Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)), 8, 32)
  assert image.size == (32, 32)
  a, b = moco_finetune.aug_plus(image, 32, rng), moco_finetune.aug_plus(image, 32, rng)
  assert a.shape == b.shape == (32, 32, 3) and a.dtype == np.uint8
  assert np.abs(a.astype(int) - b.astype(int)).mean() > 1  # Two views differ.


def test_queue_wraps_around():
  moco = moco_finetune.MoCo(backbones.moco_resnet50(dim=4, **TINY), dim=4, queue_size=6)
  keys = torch.nn.functional.normalize(torch.randn(4, 4), dim=1)
  moco.enqueue(keys)
  moco.enqueue(keys)
  assert int(moco.queue_ptr) == 2
  torch.testing.assert_close(moco.queue[:, 4:6], keys[:2].T)
  torch.testing.assert_close(moco.queue[:, 0:2], keys[2:].T)


def test_infonce_loss_matches_the_formula():
  torch.manual_seed(0)
  encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
  moco = moco_finetune.MoCo(encoder, dim=4, queue_size=6, temperature=0.2)
  queue = moco.queue.clone()
  view_q, view_k = torch.randn(3, 3, 2, 2), torch.randn(3, 3, 2, 2)
  loss = moco.loss(view_q, view_k)
  w, b = encoder[1].weight.detach().numpy(), encoder[1].bias.detach().numpy()
  unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
  q = unit(view_q.reshape(3, 12).numpy() @ w.T + b)
  k = unit(view_k.reshape(3, 12).numpy() @ w.T + b)  # encoder_k == encoder_q at the start.
  logits = np.concatenate([np.sum(q * k, 1, keepdims=True), q @ queue.numpy()], 1) / 0.2
  expected = np.mean(np.log(np.exp(logits).sum(1)) - logits[:, 0])
  np.testing.assert_allclose(float(loss.detach()), expected, rtol=1e-5)
  torch.testing.assert_close(moco.queue[:, :3], torch.from_numpy(k.T).float(), rtol=1e-5, atol=1e-6)


def test_finetune_steps_and_checkpoint_loads_in_the_extractor(tmp_path):
  torch.manual_seed(0)
  start = str(tmp_path / "start.pth.tar")
  model = backbones.moco_resnet50(**TINY)
  save_moco_checkpoint(start, model)  # Its queue is 128 x 16: the right dim, but not queue_size 8.
  folder = make_folder(str(tmp_path / "images"), per_class=4)
  source = sources.open_source(folder, "train")
  out = str(tmp_path / "tuned.pth.tar")
  result = moco_finetune.finetune(source, start, out, steps=3, batch_size=4, lr=0.05, shrink=8, resolution=32,
                                  queue_size=8, model_kw=TINY, log=None)
  assert result["steps"] == 3 and np.isfinite(result["last_loss"])
  # Both encoders start equal, so the positive beats the 8 random negatives: below chance, log(9).
  assert 0 < result["first_loss"] < np.log(9)

  saved = torch.load(out, map_location="cpu", weights_only=True)
  state = saved["state_dict"]
  assert saved["arch"] == "resnet50" and saved["epoch"] == 3
  assert state["module.queue"].shape == (128, 8) and int(state["module.queue_ptr"]) == (3 * 4) % 8
  torch.testing.assert_close(state["module.queue"].norm(dim=0), torch.ones(8))
  # The query encoder moved; the key encoder moved by the momentum rule, much less.
  w0 = model.state_dict()["conv1.weight"]
  dq = (state["module.encoder_q.conv1.weight"] - w0).abs().max()
  dk = (state["module.encoder_k.conv1.weight"] - w0).abs().max()
  assert dq > 0 and 0 < dk < dq * 0.05

  # The extractor's loader reads the new checkpoint unchanged (no missing or unexpected keys).
  loaded = backbones.load_moco_v2(out, **TINY)
  torch.testing.assert_close(loaded.state_dict()["conv1.weight"], state["module.encoder_q.conv1.weight"])


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
  start, out = str(tmp_path / "start.pth.tar"), str(tmp_path / "tuned.pth.tar")
  for args, message in [([f"--checkpoint={start}", f"--out={out}"], "--source is required"),
                        ([f"--source={tmp_path}", "--checkpoint", start, f"--out={out}", "--lr=fast"],
                         "flag --lr=fast: could not convert string to float"),
                        ([f"--source={tmp_path / 'absent'}", f"--checkpoint={start}", f"--out={out}"],
                         "is not a folder, a .zip")]:
    assert moco_finetune.main(args) == 2, args
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
  assert not os.path.exists(out)
