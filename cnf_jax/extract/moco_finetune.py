"""MoCo v2 fine-tuning at low resolution (paper 5.2.1, "MOCO Finetuning"; appendix A.3).

Small images upsampled to 224 px give features dominated by upsampling
artefacts. The paper fine-tunes an ImageNet MoCo v2 on ImageNet images shrunk to
32 x 32 and upsampled back to 224 x 224. This is that loop:

  x -> shrink to `shrink` px -> upsample to `resolution` -> two "aug-plus" views
  q = normalize(encoder_q(view1))              [B, 128]
  k = normalize(encoder_k(view2))  (no grad)   [B, 128]
  logits = [q.k, q @ queue] / T                [B, 1 + K], T = 0.2
  loss = cross_entropy(logits, 0)              (InfoNCE)
  encoder_k <- m * encoder_k + (1 - m) * encoder_q,  m = 0.999
  queue <- enqueue(k), dequeue the oldest B

It starts from a checkpoint in MoCo's layout and saves one in the same layout
(`state_dict` with `module.encoder_q.*`, `module.encoder_k.*`, `module.queue`,
`module.queue_ptr`), so `python -m cnf_jax.extract --backbone=moco_v2
--checkpoint=<it>` loads it unchanged.

Single process: MoCo's shuffled BatchNorm across GPUs is not reproduced; with
one device the key encoder's BN sees the whole (unshuffled) batch. GPU command
(not run here; see README.md in this folder):

  python -m cnf_jax.extract.moco_finetune --source=<imagenet folder or zip> --split=train \\
      --checkpoint=moco_v2_800ep_pretrain.pth.tar --out=moco_v2_32px.pth.tar \\
      --steps=20000 --batch_size=256 --lr=0.03 --device=cuda
"""
import copy
import json
import math
import os
import sys
import time
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from absl import flags
from PIL import Image, ImageEnhance, ImageFilter

from cnf_jax import cli
from cnf_jax.errors import UserInputError
from cnf_jax.extract import backbones, sources
from cnf_jax.files import atomic_write

# ---------------------------------------------------------------------------
# "aug-plus" (MoCo v2) in PIL + numpy, since torchvision is not available next to this torch.


def random_resized_crop(image: Image.Image, size: int, rng: np.random.Generator,
                        scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)) -> Image.Image:
  """A random crop of `scale` of the area and `ratio` aspect, resized to size x size."""
  w, h = image.size
  for _ in range(10):
    area = w * h * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if 0 < cw <= w and 0 < ch <= h:
      left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
      return image.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch))
  return image.resize((size, size), Image.BILINEAR)  # Fallback: the whole image.


def color_jitter(image: Image.Image, rng: np.random.Generator, strength=(0.4, 0.4, 0.4, 0.1)) -> Image.Image:
  """Brightness, contrast, saturation factors in [1-s, 1+s] and a hue shift in [-h, h] turns."""
  b, c, s, hue = strength
  image = ImageEnhance.Brightness(image).enhance(rng.uniform(1 - b, 1 + b))
  image = ImageEnhance.Contrast(image).enhance(rng.uniform(1 - c, 1 + c))
  image = ImageEnhance.Color(image).enhance(rng.uniform(1 - s, 1 + s))
  hsv = np.asarray(image.convert("HSV")).copy()
  hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.uniform(-hue, hue) * 255)) % 256
  return Image.fromarray(hsv, "HSV").convert("RGB")


def aug_plus(image: Image.Image, size: int, rng: np.random.Generator) -> np.ndarray:
  """MoCo v2's augmentation of one view: uint8 [size, size, 3]."""
  image = random_resized_crop(image, size, rng)
  if rng.random() < 0.8:
    image = color_jitter(image, rng)
  if rng.random() < 0.2:
    image = image.convert("L").convert("RGB")
  if rng.random() < 0.5:
    image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0) * size / 224))
  if rng.random() < 0.5:
    image = image.transpose(Image.FLIP_LEFT_RIGHT)
  return np.asarray(image, dtype=np.uint8)


def low_res(image, shrink: int, resolution: int) -> Image.Image:
  """Any image -> RGB shrunk to shrink x shrink, then upsampled to resolution x resolution."""
  small = sources.to_rgb_array(image, shrink)
  return Image.fromarray(small).resize((resolution, resolution), Image.BILINEAR)


# ---------------------------------------------------------------------------
# The MoCo state


class MoCo(torch.nn.Module):
  """Query and momentum key encoders plus the queue of negatives (queue: [dim, K], columns unit-norm)."""

  def __init__(self, encoder_q: torch.nn.Module, dim: int = 128, queue_size: int = 65536,
               momentum: float = 0.999, temperature: float = 0.2):
    super().__init__()
    self.encoder_q = encoder_q
    self.encoder_k = copy.deepcopy(encoder_q)
    for p in self.encoder_k.parameters():
      p.requires_grad = False
    self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
    self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
    self.momentum, self.temperature = momentum, temperature

  @torch.no_grad()
  def momentum_update(self):
    for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
      pk.mul_(self.momentum).add_(pq.detach(), alpha=1 - self.momentum)

  @torch.no_grad()
  def enqueue(self, keys: torch.Tensor):
    """Writes keys [B, dim] over the oldest columns (wrapping around)."""
    k = self.queue.shape[1]
    ptr = int(self.queue_ptr)
    idx = (ptr + torch.arange(keys.shape[0], device=keys.device)) % k
    self.queue[:, idx] = keys.T
    self.queue_ptr[0] = (ptr + keys.shape[0]) % k

  def loss(self, view_q: torch.Tensor, view_k: torch.Tensor) -> torch.Tensor:
    """InfoNCE of [B, 3, H, W] views; updates the key encoder first, as MoCo does."""
    q = F.normalize(self.encoder_q(view_q), dim=1)
    with torch.no_grad():
      self.momentum_update()
      k = F.normalize(self.encoder_k(view_k), dim=1)
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ self.queue.clone().detach()
    logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
    loss = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
    self.enqueue(k)
    return loss


def moco_from_checkpoint(path: str, *, queue_size: int, model_kw: Optional[Dict[str, Any]] = None,
                         **moco_kw) -> MoCo:
  """A MoCo state from a MoCo-layout checkpoint: encoder_q (checked keys), encoder_k and queue if present."""
  model_kw = model_kw or {}
  encoder_q = backbones.load_moco_v2(path, **model_kw)
  moco = MoCo(encoder_q, queue_size=queue_size, **moco_kw)
  state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
  key_state = {k[len("module.encoder_k."):]: v for k, v in state.items() if k.startswith("module.encoder_k.")}
  if key_state:
    moco.encoder_k.load_state_dict(key_state, strict=False)
  queue = state.get("module.queue")
  if queue is not None and tuple(queue.shape) == tuple(moco.queue.shape):
    moco.queue.copy_(queue)
    moco.queue_ptr.copy_(state["module.queue_ptr"])
  return moco


def save_checkpoint(path: str, moco: MoCo, optimizer: torch.optim.Optimizer, step: int, arch: str = "resnet50"):
  """MoCo's layout ({'epoch', 'arch', 'state_dict': {'module.*'}, 'optimizer'}), written atomically."""
  state = {"module." + k: v.detach().cpu() for k, v in moco.state_dict().items()}
  with atomic_write(path, "wb") as f:
    torch.save({"epoch": step, "step": step, "arch": arch, "state_dict": state,
                "optimizer": optimizer.state_dict()}, f)


# ---------------------------------------------------------------------------
# The loop


def batch_of_views(source: sources.Source, rng: np.random.Generator, batch_size: int, shrink: int,
                   resolution: int, normalise) -> tuple:
  """Two aug-plus views of `batch_size` random low-resolution images, normalised [B, 3, H, W] each."""
  views_q, views_k = [], []
  for i in rng.integers(0, source.num_examples, size=batch_size):
    image = low_res(source.load(int(i))[0], shrink, resolution)
    views_q.append(aug_plus(image, resolution, rng))
    views_k.append(aug_plus(image, resolution, rng))
  to_tensor = lambda v: normalise(torch.from_numpy(np.stack(v)).permute(0, 3, 1, 2).float())
  return to_tensor(views_q), to_tensor(views_k)


def finetune(source: sources.Source, checkpoint: str, out: str, *, steps: int, batch_size: int = 256,
             lr: float = 0.03, weight_decay: float = 1e-4, shrink: int = 32, resolution: int = 224,
             queue_size: int = 65536, temperature: float = 0.2, momentum: float = 0.999, seed: int = 0,
             device: str = "cpu", model_kw: Optional[Dict[str, Any]] = None, log=print) -> Dict[str, Any]:
  """Fine-tunes the MoCo v2 checkpoint for `steps` SGD steps (cosine lr) and saves it to `out`."""
  if steps < 1 or batch_size < 2:
    raise UserInputError("--steps must be >= 1 and --batch_size >= 2")
  if queue_size % batch_size:
    raise UserInputError(f"--queue_size ({queue_size}) must be a multiple of --batch_size ({batch_size})")
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  moco = moco_from_checkpoint(checkpoint, queue_size=queue_size, model_kw=model_kw,
                              temperature=temperature, momentum=momentum).to(device)
  moco.train()
  optimizer = torch.optim.SGD(moco.encoder_q.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
  losses = []
  t0 = time.perf_counter()
  for step in range(steps):
    for group in optimizer.param_groups:  # Cosine schedule, as MoCo v2.
      group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
    view_q, view_k = batch_of_views(source, rng, batch_size, shrink, resolution, backbones._imagenet_normalise)
    loss = moco.loss(view_q.to(device), view_k.to(device))
    if not torch.isfinite(loss):
      raise RuntimeError(f"non-finite MoCo loss at step {step}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    losses.append(float(loss.detach()))
    if log and (step % 20 == 0 or step == steps - 1):
      log(json.dumps({"step": step, "loss": round(float(loss), 4), "lr": optimizer.param_groups[0]["lr"]}))
  save_checkpoint(out, moco, optimizer, steps)
  seconds = time.perf_counter() - t0
  return {"steps": steps, "first_loss": losses[0], "last_loss": losses[-1], "seconds": round(seconds, 2),
          "images_per_s": round(steps * batch_size / seconds, 1), "out": out}


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("source", None, sources.__doc__.split("\n")[0], flag_values=fv)
  flags.DEFINE_string("split", "train", "the split (folder name) of --source", flag_values=fv)
  flags.DEFINE_string("checkpoint", None, "MoCo v2 checkpoint to start from", flag_values=fv)
  flags.DEFINE_string("out", None, "where to save the fine-tuned checkpoint (.pth.tar)", flag_values=fv)
  flags.DEFINE_integer("steps", 1000, "optimizer steps", flag_values=fv)
  flags.DEFINE_integer("batch_size", 256, "images per step", flag_values=fv)
  flags.DEFINE_float("lr", 0.03, "SGD learning rate (cosine schedule from it)", flag_values=fv)
  flags.DEFINE_integer("shrink", 32, "images are shrunk to this many pixels first", flag_values=fv)
  flags.DEFINE_integer("resolution", 224, "... and upsampled back to this", flag_values=fv)
  flags.DEFINE_integer("queue_size", 65536, "negative keys in the queue", flag_values=fv)
  flags.DEFINE_float("temperature", 0.2, "InfoNCE temperature T", flag_values=fv)
  flags.DEFINE_string("device", None, "cpu or cuda (default: cuda if available)", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "random seed (augmentations, data order)", flag_values=fv)


@cli.command
def main(argv: Sequence[str]) -> int:
  args, _ = cli.parse(define_flags, argv, __doc__, required=("source", "checkpoint", "out"))
  source = sources.open_source(os.path.expanduser(args.source), args.split)
  device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
  result = finetune(source, args.checkpoint, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    shrink=args.shrink, resolution=args.resolution, queue_size=args.queue_size,
                    temperature=args.temperature, device=device, seed=args.seed,
                    log=lambda line: print(line, file=sys.stderr))
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  cli.run(main)
