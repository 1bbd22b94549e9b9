"""datapackages: importing OpenCompass data packages safely, and the readiness of built-in benchmarks."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from aieval_engine.catalogue import benchmarks, package_by_archive_name, package_for_path, resolve_builtin
from aieval_engine.datapackages import PackageError, import_package, mirror_url

GSM8K_ROWS = [{"question": "Janet has 3 apples and buys 2 more. How many?", "answer": "3 + 2 = 5\n#### 5"}]


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return path


def make_tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as bundle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            bundle.addfile(info)
    return path


def gsm8k_benchmark(cache: Path):
    return next(b for b in benchmarks(cache) if b.name == "gsm8k")


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith(".aieval"))


def test_a_per_dataset_zip_makes_gsm8k_ready(tmp_path):
    cache = tmp_path / "compass"
    before = gsm8k_benchmark(cache)
    assert before.ready_configs == 0 and not before.ready
    assert "gsm8k.zip" in [p.archive_name for p in before.packages]
    assert "aieval datasets fetch gsm8k" in before.how_to_get()

    # Named like OpenCompass' own archive would carry its md5: this crafted one is named otherwise.
    archive = make_zip(tmp_path / "my-gsm8k.zip", {"gsm8k/test.jsonl": jsonl(GSM8K_ROWS),
                                                    "gsm8k/train.jsonl": jsonl(GSM8K_ROWS)})
    report = import_package(archive, cache)

    assert report.installed == ("gsm8k",)
    assert (cache / "data" / "gsm8k" / "test.jsonl").read_bytes() == jsonl(GSM8K_ROWS)
    assert "gsm8k_gen" in report.became_ready and "gsm8k" in report.benchmarks_ready
    assert "publishes no checksum" in report.checksum
    after = gsm8k_benchmark(cache)
    assert after.ready and after.how_to_get() == ""
    assert leftovers(cache) == []


def test_a_bundle_tar_with_data_folder_imports_and_replaces_an_earlier_copy(tmp_path):
    cache = tmp_path / "compass"
    (cache / "data" / "gsm8k").mkdir(parents=True)
    (cache / "data" / "gsm8k" / "old.jsonl").write_text("old")
    archive = make_tar(tmp_path / "OpenCompassData-core-test.tar.gz",
                       {"data/gsm8k/test.jsonl": jsonl(GSM8K_ROWS), "data/other_set/x.json": b"{}"})
    report = import_package(archive, cache)
    assert report.installed == ("gsm8k", "other_set") and report.replaced == ("gsm8k",)
    assert sorted(p.name for p in (cache / "data" / "gsm8k").iterdir()) == ["test.jsonl"]
    assert (cache / "data" / "other_set" / "x.json").exists()
    assert leftovers(cache) == []


@pytest.mark.parametrize("member", ["../escape.txt", "gsm8k/../../escape.txt", "/tmp/absolute-escape.txt"])
def test_zip_entries_leaving_the_data_folder_are_refused(tmp_path, member):
    cache = tmp_path / "compass"
    archive = make_zip(tmp_path / "bad.zip", {"gsm8k/test.jsonl": jsonl(GSM8K_ROWS), member: b"owned"})
    with pytest.raises(PackageError, match="outside the data folder"):
        import_package(archive, cache)
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/absolute-escape.txt").exists()
    assert not (cache / "data" / "gsm8k").exists()  # nothing half-imported
    assert leftovers(cache) == []


def test_tar_path_traversal_and_escaping_links_are_refused(tmp_path):
    cache = tmp_path / "compass"
    traversal = make_tar(tmp_path / "traversal.tar.gz", {"gsm8k/test.jsonl": b"{}", "../../escape.txt": b"owned"})
    with pytest.raises(PackageError, match="outside the data folder"):
        import_package(traversal, cache)
    link = make_tar(tmp_path / "link.tar.gz", {"gsm8k/test.jsonl": b"{}"}, links={"gsm8k/passwd": "/etc/passwd"})
    with pytest.raises(PackageError, match="outside the data folder"):
        import_package(link, cache)
    sneaky = make_tar(tmp_path / "sneaky.tar.gz", {"gsm8k/test.jsonl": b"{}"}, links={"gsm8k/up": "../../../etc"})
    with pytest.raises(PackageError, match="outside the data folder"):
        import_package(sneaky, cache)
    assert not (cache / "data").exists() or not any((cache / "data").iterdir())
    assert leftovers(cache) == []


def test_a_zip_symlink_entry_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        info = zipfile.ZipInfo("gsm8k/link")
        info.external_attr = (0o120777 << 16)
        bundle.writestr(info, "/etc/passwd")
    with pytest.raises(PackageError, match="symbolic link"):
        import_package(archive, tmp_path / "compass")


def test_an_archive_named_like_a_published_one_must_have_its_md5(tmp_path):
    published = package_by_archive_name("gsm8k.zip")
    assert published is not None and published.md5  # OpenCompass' own table, read from the installed package
    archive = make_zip(tmp_path / "gsm8k.zip", {"gsm8k/test.jsonl": jsonl(GSM8K_ROWS)})
    with pytest.raises(PackageError, match=f"published checksum is {published.md5}"):
        import_package(archive, tmp_path / "compass")
    assert not (tmp_path / "compass" / "data" / "gsm8k").exists()
    with pytest.raises(PackageError, match="published checksum is 0123"):
        import_package(archive, tmp_path / "compass", archive_name="mine.zip", expected_md5="0123")


def test_archive_bombs_are_refused_by_size_and_entry_count(tmp_path):
    cache = tmp_path / "compass"
    big = make_zip(tmp_path / "big.zip", {"gsm8k/zeros.bin": b"\0" * 200_000})  # compresses to a few hundred bytes
    with pytest.raises(PackageError, match="archive bomb"):
        import_package(big, cache, max_bytes=100_000)
    many = make_zip(tmp_path / "many.zip", {f"gsm8k/{i}.txt": b"x" for i in range(30)})
    with pytest.raises(PackageError, match="more than 20 entries"):
        import_package(many, cache, max_entries=20)
    many_tar = make_tar(tmp_path / "many.tar.gz", {f"gsm8k/{i}.txt": b"x" for i in range(30)})
    with pytest.raises(PackageError, match="more than 20 entries"):
        import_package(many_tar, cache, max_entries=20)
    assert leftovers(cache) == [] and not (cache / "data" / "gsm8k").exists()


def test_a_folder_imports_and_a_link_out_of_it_is_refused(tmp_path):
    source = tmp_path / "packages"
    (source / "gsm8k").mkdir(parents=True)
    (source / "gsm8k" / "test.jsonl").write_bytes(jsonl(GSM8K_ROWS))
    cache = tmp_path / "compass"
    report = import_package(source, cache)
    assert report.installed == ("gsm8k",) and "gsm8k_gen" in report.became_ready
    assert (source / "gsm8k" / "test.jsonl").exists()  # copied, not moved

    (tmp_path / "secret.txt").write_text("secret")
    (source / "gsm8k" / "secret.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(PackageError, match="outside the folder being imported"):
        import_package(source, tmp_path / "other-cache")


def test_other_files_are_not_packages(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PackageError, match="archives can be imported"):
        import_package(tmp_path / "notes.txt", tmp_path / "compass")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(PackageError, match="not a readable zip"):
        import_package(tmp_path / "broken.zip", tmp_path / "compass")


def test_the_archive_for_a_config_path_follows_opencompass_own_rule():
    assert package_for_path("opencompass/gsm8k").archive_name == "gsm8k.zip"
    assert package_for_path("/absolute/file.jsonl") is None
    assert resolve_builtin("gsm8k_gen").data_paths == ("opencompass/gsm8k",)


def test_the_mirror_replaces_scheme_and_host_and_keeps_the_path():
    url = "http://opencompass.oss-cn-shanghai.aliyuncs.com/datasets/data/gsm8k.zip"
    assert mirror_url(url, None) == url
    assert mirror_url(url, "http://127.0.0.1:8080") == "http://127.0.0.1:8080/datasets/data/gsm8k.zip"
    assert mirror_url(url, "https://mirror.example/oc/") == "https://mirror.example/oc/datasets/data/gsm8k.zip"
    with pytest.raises(PackageError, match="http:// or https://"):
        mirror_url(url, "file:///etc")
