"""Tiny image folders, zips and MoCo-layout checkpoints that the extractor tests make themselves."""
import os
import zipfile

import numpy as np
import torch
from PIL import Image


def _image(rng, mode, size):
  rgb = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
  if mode == "P":
    return rgb.convert("P", palette=Image.ADAPTIVE, colors=16)
  return rgb.convert(mode)


def make_folder(root, split="train", per_class=3, modes=("RGB", "L", "RGBA", "P", "CMYK"), junk=False):
  """root/<split>/{cat,dog}/img_k.<png|jpg>, images in several PIL modes and sizes."""
  rng = np.random.default_rng(1)
  k = 0
  for label in ("dog", "cat"):  # Written out of order: class order must come from sorting.
    os.makedirs(os.path.join(root, split, label))
    for i in range(per_class):
      mode = modes[k % len(modes)]
      size = (24 + 4 * (k % 3), 20 + 8 * (k % 2))
      ext = "jpg" if mode == "CMYK" else "png"
      _image(rng, mode, size).save(os.path.join(root, split, label, f"img_{i}.{ext}"))
      k += 1
  if junk:
    with open(os.path.join(root, split, "cat", "notes.jpg"), "w") as f:
      f.write("not an image")
  return root


def zip_folder(folder, path, top="toy"):
  with zipfile.ZipFile(path, "w") as z:
    for dirpath, _, files in os.walk(folder):
      for f in files:
        full = os.path.join(dirpath, f)
        z.write(full, top + "/" + os.path.relpath(full, folder).replace(os.sep, "/"))
  return path


def save_moco_checkpoint(path, model, *, prefix="module.encoder_q."):
  """MoCo's layout: {'epoch', 'arch', 'state_dict': {module.encoder_q.*, module.encoder_k.*, queue}, 'optimizer'}."""
  state = {prefix + k: v for k, v in model.state_dict().items()}
  state.update({"module.encoder_k." + k: v.clone() for k, v in model.state_dict().items()})
  state["module.queue"] = torch.randn(128, 16)
  state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
  torch.save({"epoch": 800, "arch": "resnet50", "state_dict": state, "optimizer": {}}, path)
