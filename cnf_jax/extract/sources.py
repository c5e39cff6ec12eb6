"""Image sources: local folders and .zip archives (root/split/label/image), npz arrays, TFDS.

A folder or archive may also hold `fine_to_coarse.csv` next to its split folders (header
`fine,coarse`, one row per label folder, as ../shared/data's CIFAR-100 subset): its labels then
get coarse labels too (coarse class names sorted, CIFAR-100's standard superclass order).

A source is a random-access list of N examples with a fixed order: `load(i)`
returns (image, label, coarse_label or None, attributes dict), where image is a
PIL image or a uint8 array [H, W, C]. Shards of the feature dataset cover
contiguous index ranges of this order, which is what makes extraction resumable.
"""
import dataclasses
import io
import os
import threading
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from cnf_jax.errors import UserInputError

# TFDS datasets the experiments use: name -> (label key, coarse label key, attribute keys).
TFDS_LABELS = {
    "cifar10": ("label", None, ()),
    "cifar100": ("label", "coarse_label", ()),
    "svhn_cropped": ("label", None, ()),
    "celeb_a": (None, None, ("Male",)),
    "imagenet2012": ("label", None, ()),
    "imagenet_resized/32x32": ("label", None, ()),
    "imagenet_resized/64x64": ("label", None, ()),
    "downsampled_imagenet/32x32": (None, None, ()),
    "downsampled_imagenet/64x64": (None, None, ()),
}


@dataclasses.dataclass
class Source:
  """N examples in a fixed order. `describe` identifies the source in metadata and plans."""
  describe: str
  num_examples: int
  class_names: List[str]
  load: Callable[[int], Tuple[Any, int, Optional[int], Dict[str, int]]]
  coarse_class_names: Optional[List[str]] = None
  attribute_names: Tuple[str, ...] = ()
  ignored: int = 0  # Files skipped while listing (e.g. stray files next to the label folders).


def open_source(spec: str, split: str, *, data_dir: Optional[str] = None) -> Source:
  """`tfds:<name>`, `npz:<path>`, or a path to a folder / .zip in the root/split/label/image layout."""
  if spec.startswith("tfds:"):
    return _tfds_source(spec[len("tfds:"):], split, data_dir)
  if spec.startswith("npz:"):
    return _npz_source(spec[len("npz:"):], split)
  if spec.lower().endswith(".zip"):
    return _zip_source(spec, split)
  if os.path.isdir(spec):
    return _folder_source(spec, split)
  raise UserInputError(f"source {spec!r} is not a folder, a .zip, npz:<path> or tfds:<name>; "
                       "check the path")


# ---------------------------------------------------------------------------
# Folders and zip archives


COARSE_LABELS_FILE = "fine_to_coarse.csv"


def _coarse_labels(read_csv: Callable[[], Optional[bytes]], class_names: List[str], where: str
                   ) -> Tuple[Optional[List[int]], Optional[List[str]]]:
  """(coarse label of each fine class, coarse class names) from fine_to_coarse.csv, or (None, None)
  without the file. The file must name every label folder once."""
  data = read_csv()
  if data is None:
    return None, None
  rows = [line.split(",") for line in data.decode("utf-8").splitlines() if line.strip()]
  if not rows or [c.strip() for c in rows[0]] != ["fine", "coarse"] or any(len(r) != 2 for r in rows[1:]):
    raise UserInputError(f"{where}: {COARSE_LABELS_FILE} must have the header 'fine,coarse' and two columns "
                         "per row")
  mapping = {fine.strip(): coarse.strip() for fine, coarse in rows[1:]}
  missing = [name for name in class_names if name not in mapping]
  if missing:
    raise UserInputError(f"{where}: {COARSE_LABELS_FILE} has no coarse label for the label folder(s) "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; add a row for each")
  coarse_names = sorted(set(mapping[name] for name in class_names))
  return [coarse_names.index(mapping[name]) for name in class_names], coarse_names


def _split_root(dirs: List[str], split: str, where: str) -> str:
  """The prefix 'p/' such that 'p/<split>/' exists: '' or the single top-level folder."""
  if split in dirs:
    return ""
  tops = sorted({d.split("/")[0] for d in dirs})
  if len(tops) == 1 and f"{tops[0]}/{split}" in dirs:
    return tops[0] + "/"
  splits = sorted({d.split("/")[-1] for d in dirs if d.count("/") <= 1})
  raise UserInputError(f"{where} has no split folder {split!r} (root/split/label/image layout); "
                       f"folders found: {', '.join(splits) or 'none'}")


def _index_files(files: List[str], split_prefix: str, where: str) -> Tuple[List[str], List[int], List[str], int]:
  """Sorted (paths, labels, class_names, ignored) from the files under split_prefix/<label>/."""
  by_class: Dict[str, List[str]] = {}
  ignored = 0
  for f in files:
    if not f.startswith(split_prefix):
      continue
    parts = f[len(split_prefix):].split("/")
    if len(parts) != 2 or parts[1].startswith("."):
      ignored += 1  # Files directly in the split folder, deeper files, hidden files.
      continue
    by_class.setdefault(parts[0], []).append(f)
  if not by_class:
    raise UserInputError(f"{where} has no images under {split_prefix or './'}<label>/; "
                         "expected the root/split/label/image layout")
  class_names = sorted(by_class)
  paths, labels = [], []
  for label, name in enumerate(class_names):
    for f in sorted(by_class[name]):
      paths.append(f)
      labels.append(label)
  return paths, labels, class_names, ignored


def _folder_source(root: str, split: str) -> Source:
  dirs, files = [], []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
    rel = "" if rel == "." else rel + "/"
    dirs += [rel + d for d in dirnames]
    files += [rel + f for f in filenames]
  top = _split_root(dirs, split, root)
  paths, labels, class_names, ignored = _index_files(files, top + split + "/", root)

  def read(path):
    with open(path, "rb") as f:
      return f.read()

  csv_path = os.path.join(root, top, COARSE_LABELS_FILE)
  coarse_of, coarse_names = _coarse_labels(lambda: read(csv_path) if os.path.isfile(csv_path) else None,
                                           class_names, root)

  def load(i):
    path = os.path.join(root, paths[i])
    coarse = None if coarse_of is None else coarse_of[labels[i]]
    return _open_image(path, lambda: read(path)), labels[i], coarse, {}

  return Source(f"folder:{os.path.abspath(root)}:{split}", len(paths), class_names, load, ignored=ignored,
                coarse_class_names=coarse_names)


def _zip_source(path: str, split: str) -> Source:
  if not os.path.exists(path):
    raise UserInputError(f"archive {path} does not exist")
  try:
    archive = zipfile.ZipFile(path)
  except zipfile.BadZipFile:
    raise UserInputError(f"{path} is not a readable zip archive") from None
  names = archive.namelist()
  files = [n for n in names if not n.endswith("/")]
  dirs = set(n.rstrip("/") for n in names if n.endswith("/"))
  for f in files:  # Archives need not list folders explicitly.
    parts = f.split("/")[:-1]
    dirs.update("/".join(parts[:k]) for k in range(1, len(parts) + 1))
  top = _split_root(sorted(dirs), split, path)
  paths, labels, class_names, ignored = _index_files(files, top + split + "/", path)
  local = threading.local()  # One handle per thread: ZipFile reads are not thread-safe to interleave.

  def read(name):
    if not hasattr(local, "archive"):
      local.archive = zipfile.ZipFile(path)
    return local.archive.read(name)

  csv_name = top + COARSE_LABELS_FILE
  coarse_of, coarse_names = _coarse_labels(lambda: read(csv_name) if csv_name in files else None,
                                           class_names, path)

  def load(i):
    coarse = None if coarse_of is None else coarse_of[labels[i]]
    return _open_image(f"{path}:{paths[i]}", lambda: read(paths[i])), labels[i], coarse, {}

  return Source(f"zip:{os.path.abspath(path)}:{split}", len(paths), class_names, load, ignored=ignored,
                coarse_class_names=coarse_names)


class BadImage(Exception):
  """A file in the source that is not a readable image; the message names it."""


def _open_image(name: str, read: Callable[[], bytes]) -> Image.Image:
  try:
    image = Image.open(io.BytesIO(read()))
    image.load()
  except Exception as e:  # PIL raises several types for non-images and truncated files.
    raise BadImage(f"{name} is not a readable image ({type(e).__name__})") from None
  return image


# ---------------------------------------------------------------------------
# Numpy arrays


def _npz_source(path: str, split: str) -> Source:
  """Arrays `<split>_images` + `<split>_labels`, or `images` + `labels` (uint8 [N, H, W(, C)]).

  Optional: `class_names`, `<split>_coarse_labels` / `coarse_labels` with `coarse_class_names`.
  """
  if not os.path.exists(path):
    raise UserInputError(f"npz file {path} does not exist")
  with np.load(path, allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}

  def get(key):
    return arrays.get(f"{split}_{key}", arrays.get(key))

  images, labels = get("images"), get("labels")
  if images is None or labels is None:
    raise UserInputError(f"{path} needs arrays '{split}_images' and '{split}_labels' (or 'images' and "
                         f"'labels'); it has {', '.join(sorted(arrays))}")
  if images.ndim not in (3, 4) or len(images) != len(labels):
    raise UserInputError(f"{path}: images must be [N, H, W] or [N, H, W, C] with N labels; got "
                         f"{images.shape} and {labels.shape}")
  labels = labels.astype(np.int64)
  class_names = [str(c) for c in arrays["class_names"]] if "class_names" in arrays else \
      [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
  coarse = get("coarse_labels")
  coarse_names = None
  if coarse is not None:
    coarse_names = [str(c) for c in arrays["coarse_class_names"]] if "coarse_class_names" in arrays else \
        [str(i) for i in range(int(coarse.max()) + 1)]

  def load(i):
    return images[i], int(labels[i]), (None if coarse is None else int(coarse[i])), {}

  return Source(f"npz:{os.path.abspath(path)}:{split}", len(images), class_names, load,
                coarse_class_names=coarse_names)


# ---------------------------------------------------------------------------
# TFDS


def _tfds_source(name: str, split: str, data_dir: Optional[str]) -> Source:
  """A TFDS dataset through `tfds.data_source` (random access, no TensorFlow needed)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  base = name.split(":")[0]
  if base not in TFDS_LABELS:
    raise UserInputError(f"unknown TFDS dataset {name!r}; supported: {', '.join(sorted(TFDS_LABELS))}")
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # DatasetNotFoundError and friends.
    raise UserInputError(f"TFDS dataset {name!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
  try:
    data = builder.as_data_source(split=split)
  except Exception as e:
    raise UserInputError(
        f"TFDS dataset {name!r} split {split!r} is not prepared in {builder.data_dir} and cannot be "
        f"downloaded here ({type(e).__name__}); prepare it where there is internet access "
        "(tfds build, file format array_record) and pass --data_dir=<that folder>, or point "
        "--source at a local image folder/.zip") from None
  label_key, coarse_key, attribute_keys = TFDS_LABELS[base]
  features = builder.info.features
  class_names = list(features[label_key].names) if label_key else ["all"]
  coarse_names = list(features[coarse_key].names) if coarse_key else None

  def load(i):
    ex = data[i]
    attributes = {a: int(ex["attributes"][a]) for a in attribute_keys}
    return (np.asarray(ex["image"]), int(ex[label_key]) if label_key else 0,
            int(ex[coarse_key]) if coarse_key else None, attributes)

  return Source(f"tfds:{name}:{split}", len(data), class_names, load,
                coarse_class_names=coarse_names, attribute_names=tuple(attribute_keys))


# ---------------------------------------------------------------------------
# Image conversion


@dataclasses.dataclass(frozen=True)
class Bottleneck:
  """A resolution every image passes through before the backbone's: the shorter side resized
  to `pixels` and the centre square cropped (as `to_rgb_array`), then, with jpeg_quality > 0,
  a JPEG encode / decode at that quality.

  Why: the paper shrinks its contrastive ImageNet images to 32 x 32 before upsampling them for
  MoCo, so that they reach the backbone as blurred, compressed and upsampled as the 32 px CIFAR
  inliers (the CIFAR zip here holds JPEGs of quality 75). Without it a flow can tell the two sets
  apart by resolution alone, and the contrastive term stops shaping the inlier density.
  """
  pixels: int
  jpeg_quality: int = 75

  def apply(self, image: "Image.Image") -> "Image.Image":
    """RGB PIL image -> RGB PIL image of pixels x pixels."""
    small = Image.fromarray(_resize_and_crop(image, self.pixels))
    if self.jpeg_quality <= 0:
      return small
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=self.jpeg_quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")

  def describe(self) -> Dict[str, int]:
    return {"pixels": self.pixels, "jpeg_quality": self.jpeg_quality}


def to_rgb_array(image, resolution: int, bottleneck: Optional[Bottleneck] = None) -> np.ndarray:
  """PIL image or uint8 array -> uint8 [resolution, resolution, 3].

  Grayscale, palette, RGBA/LA (composited on white, so transparent areas do not
  turn black), CMYK and 16-bit images become RGB. With a `bottleneck`, the image
  first goes through it (`Bottleneck.apply`). The shorter side is resized to
  `resolution` (bilinear: small images are upsampled, as the paper does) and the
  centre square is cropped.
  """
  if isinstance(image, np.ndarray):
    arr = image
    if arr.ndim == 3 and arr.shape[-1] == 1:
      arr = arr[..., 0]
    if arr.dtype != np.uint8:
      raise UserInputError(f"image arrays must be uint8, got {arr.dtype}")
    image = Image.fromarray(arr)
  if image.mode == "P":
    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
  if image.mode in ("RGBA", "LA", "PA"):
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
    image = background
  elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
    arr = np.asarray(image, dtype=np.float64)
    scale = 65535.0 if arr.max() > 255 else 255.0
    image = Image.fromarray(np.clip(arr / scale * 255.0, 0, 255).astype(np.uint8))
  if image.mode != "RGB":
    image = image.convert("RGB")  # L, 1, CMYK, YCbCr, F, ...
  if bottleneck is not None:
    image = bottleneck.apply(image)
  return _resize_and_crop(image, resolution)


def _resize_and_crop(image: "Image.Image", resolution: int) -> np.ndarray:
  """RGB PIL image -> uint8 [resolution, resolution, 3]: shorter side to `resolution`
  (bilinear), centre square."""
  w, h = image.size
  scale = resolution / min(w, h)
  new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
  if (new_w, new_h) != (w, h):
    image = image.resize((new_w, new_h), Image.BILINEAR)
  left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
  if (new_w, new_h) != (resolution, resolution):
    image = image.crop((left, top, left + resolution, top + resolution))
  return np.asarray(image, dtype=np.uint8)


def native_pixels(source: "Source", sample: int = 64) -> Optional[int]:
  """The median shorter side of up to `sample` images spread over `source` (their native
  resolution, before any resize), or None when none of them is readable."""
  n = source.num_examples
  sides = []
  for i in sorted({int(i) for i in np.linspace(0, n - 1, min(sample, n))}):
    try:
      image = source.load(i)[0]
    except BadImage:
      continue
    size = image.shape[:2] if isinstance(image, np.ndarray) else image.size
    sides.append(min(size))
  return int(np.median(sides)) if sides else None
