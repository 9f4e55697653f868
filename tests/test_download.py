"""`mblip fetch`'s engine against a local HTTP server: resume, checksums, coverage, local folders, unpacking,
and the authors' Web CapFilt image preprocessing. No internet."""
import hashlib
import io
import json
import os
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from mblip import download as D
from mblip import sources as S


# ------------------------------------------------------------------------------------------ a tiny file server
@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    drop_after: int | None = None
    """Send the full Content-Length header, then only this many bytes, then close the connection..."""
    drops: int = 1
    """...for this many requests (later ones succeed)."""
    ignore_range: bool = False


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.log.append((self.path, self.headers.get("Range")))
        route = srv.routes.get(self.path)
        if route is None or route.status != 200:
            self.send_error(route.status if route else 404)
            return
        body, start, status = route.body, 0, 200
        rng = self.headers.get("Range")
        if rng and not route.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        payload = body[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if route.drop_after is not None and route.drops > 0:
            route.drops -= 1
            self.wfile.write(payload[: route.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.routes, srv.log, srv.lock = {}, [], threading.Lock()
    srv.url = lambda path: f"http://127.0.0.1:{srv.server_address[1]}{path}"
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


BLOB = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


def src(name, url, dest, **kw) -> S.Source:
    kw.setdefault("kind", "annotation")
    return S.Source(name, url, dest, benchmark=kw.pop("benchmark", "xgqa"), license="test", **kw)


# ------------------------------------------------------------------------------------------ download()
def test_complete_download_verifies_sha_and_second_call_fetches_nothing(server, tmp_path):
    server.routes["/f.bin"] = Route(BLOB)
    dest = tmp_path / "a" / "f.bin"
    assert D.download(server.url("/f.bin"), dest, sha256=sha(BLOB), size=len(BLOB), progress=False) == dest
    assert dest.read_bytes() == BLOB and not (tmp_path / "a" / "f.bin.part").exists()
    assert server.log == [("/f.bin", None)]
    D.download(server.url("/f.bin"), dest, sha256=sha(BLOB), progress=False)
    assert len(server.log) == 1  # verified on disk, no request


@pytest.mark.parametrize("retries", [0, 2], ids=["resume-next-call", "resume-within-call"])
def test_interrupted_download_resumes_from_the_part_file(server, tmp_path, retries):
    server.routes["/f.bin"] = Route(BLOB, drop_after=100_000)
    dest = tmp_path / "f.bin"
    if retries == 0:  # the first call dies mid-transfer and keeps what it got
        with pytest.raises(D.DownloadError, match="resumes"):
            D.download(server.url("/f.bin"), dest, sha256=sha(BLOB), retries=0, progress=False)
        assert (tmp_path / "f.bin.part").stat().st_size == 100_000 and not dest.exists()
    D.download(server.url("/f.bin"), dest, sha256=sha(BLOB), retries=retries, backoff=0, progress=False)
    assert [r for _, r in server.log] == [None, "bytes=100000-"]
    assert dest.read_bytes() == BLOB and sha(dest.read_bytes()) == sha(BLOB)
    assert not (tmp_path / "f.bin.part").exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.routes["/f.bin"] = Route(BLOB, ignore_range=True)
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(b"\0" * 50_000)  # stale bytes: appending would corrupt the file
    D.download(server.url("/f.bin"), dest, sha256=sha(BLOB), progress=False)
    assert server.log == [("/f.bin", "bytes=50000-")]
    assert dest.read_bytes() == BLOB


def test_a_complete_part_file_is_finished_without_refetching(server, tmp_path):
    server.routes["/f.bin"] = Route(BLOB)
    (tmp_path / "f.bin.part").write_bytes(BLOB)  # killed after the last byte, before the rename
    D.download(server.url("/f.bin"), tmp_path / "f.bin", sha256=sha(BLOB), progress=False)
    assert server.log == [("/f.bin", f"bytes={len(BLOB)}-")]  # answered 416: nothing left to send
    assert (tmp_path / "f.bin").read_bytes() == BLOB


def test_wrong_sha_is_a_clear_error_and_the_good_file_stays(server, tmp_path):
    good = b"the good old file\n"
    server.routes["/f.bin"] = Route(BLOB)
    dest = tmp_path / "f.bin"
    dest.write_bytes(good)
    wanted = sha(b"what the manifest expects")
    with pytest.raises(D.ChecksumError) as e:
        D.download(server.url("/f.bin"), dest, sha256=wanted, retries=0, progress=False)
    msg = str(e.value)
    assert "f.bin" in msg and wanted in msg and sha(BLOB) in msg
    assert dest.read_bytes() == good and not (tmp_path / "f.bin.part").exists()


# ------------------------------------------------------------------------------------------ fetch_all()
def test_checksum_trusted_on_first_use_then_a_changed_file_is_detected(server, tmp_path):
    server.routes["/x.json"] = Route(BLOB)
    sources = [src("x", server.url("/x.json"), "x/x.json")]
    rep = D.fetch_all(sources, tmp_path, progress=False)
    assert rep.counts["ok"] == 1
    assert (tmp_path / "CHECKSUMS.sha256").read_text() == f"{sha(BLOB)}  x/x.json\n"
    first = (tmp_path / "COVERAGE.md").read_text(), (tmp_path / "coverage.json").read_text()
    assert D.fetch_all(sources, tmp_path, progress=False).counts["cached"] == 1 and len(server.log) == 1
    # nothing changed on disk -> the tracked report files do not change either
    assert ((tmp_path / "COVERAGE.md").read_text(), (tmp_path / "coverage.json").read_text()) == first

    changed = BLOB[:-1] + bytes([BLOB[-1] ^ 1])  # same size, one bit flipped
    (tmp_path / "x/x.json").write_bytes(changed)
    rep = D.fetch_all(sources, tmp_path, progress=False)
    (r,) = rep.results
    assert r.status == "failed" and sha(BLOB) in r.reason and sha(changed) in r.reason and "CHECKSUMS" in r.reason
    assert (tmp_path / "x/x.json").read_bytes() == changed  # reported, not silently replaced

    # upstream changed: a fresh download is checked against the recorded hash too
    (tmp_path / "x/x.json").unlink()
    server.routes["/x.json"] = Route(changed)
    (r,) = D.fetch_all(sources, tmp_path, progress=False).results
    assert r.status == "failed" and sha(BLOB) in r.reason and not (tmp_path / "x/x.json").exists()


def test_404_is_reported_while_the_other_files_succeed(server, tmp_path):
    server.routes["/good.jsonl"] = Route(b'{"a": 1}\n')
    server.routes["/big.jsonl"] = Route(b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    sources = [src("gone", server.url("/gone.jsonl"), "b/gone.jsonl", required_for=("xvnli",)),
               src("good", server.url("/good.jsonl"), "b/good.jsonl"),
               src("lfs", server.url("/big.jsonl"), "b/big.jsonl"),
               src("form", None, "imgs", kind="images", folder=True, note="ask the authors")]
    rep = D.fetch_all(sources, tmp_path, workers=3, progress=False)
    assert rep.counts == {"ok": 1, "cached": 0, "local": 0, "failed": 2, "skipped": 1}
    assert [(r.name, r.status) for r in rep.missing] == [("gone", "failed"), ("lfs", "failed"), ("form", "skipped")]
    assert "404" in rep.missing[0].reason and "Git LFS pointer" in rep.missing[1].reason
    assert rep.affected() == {"xgqa": ["lfs", "form"], "xvnli": ["gone"]}
    assert not (tmp_path / "b/big.jsonl").exists() and "big" not in (tmp_path / "CHECKSUMS.sha256").read_text()
    assert (tmp_path / "b/good.jsonl").read_bytes() == b'{"a": 1}\n'
    md = (tmp_path / "COVERAGE.md").read_text()
    assert "`gone`" in md and "404" in md and "ask the authors" in md
    js = json.loads((tmp_path / "coverage.json").read_text())
    assert [m["name"] for m in js["missing"]] == ["gone", "lfs", "form"] and js["counts"]["failed"] == 2


@pytest.mark.parametrize("link", ["hardlink", "copy", "symlink"])
def test_local_folder_is_linked_instead_of_downloaded(server, tmp_path, link):
    local, root = tmp_path / "mine", tmp_path / "paper"
    (local / "ann").mkdir(parents=True)
    (local / "ann/test.jsonl").write_bytes(b"local copy\n")
    (local / "flickr/images").mkdir(parents=True)
    (local / "flickr/images/1.jpg").write_bytes(b"jpeg")
    (local / "coco/val2014").mkdir(parents=True)  # unpacked already, archive long deleted
    (local / "coco/val2014/2.jpg").write_bytes(b"jpeg 2")
    server.routes["/other.json"] = Route(b"{}")
    sources = [src("t", server.url("/test.jsonl"), "ann/test.jsonl"),
               src("imgs", None, "flickr/images", kind="images", folder=True, note="form"),
               src("val", server.url("/val2014.zip"), "coco/val2014.zip", kind="images", unpack="zip"),
               src("o", server.url("/other.json"), "o/other.json")]
    rep = D.fetch_all(sources, root, local=local, link=link, progress=False)
    assert [r.status for r in rep.results] == ["local", "local", "local", "ok"]
    assert server.log == [("/other.json", None)]  # only what the local folder lacks is downloaded
    for rel in ("ann/test.jsonl", "flickr/images/1.jpg", "coco/val2014/2.jpg"):
        assert (root / rel).read_bytes() == (local / rel).read_bytes()
        assert os.path.samefile(root / rel, local / rel) == (link != "copy")
    assert "ann/test.jsonl" in (root / "CHECKSUMS.sha256").read_text()
    # later runs without the local folder find everything in place and download nothing
    rep = D.fetch_all(sources, root, progress=False)
    assert [r.status for r in rep.results] == ["cached"] * 4 and len(server.log) == 1


def _archive(fmt: str, entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w") as z:
            for name, data in entries.items():
                z.writestr(name, data)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            for name, data in entries.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["zip", "tgz"])
def test_archive_is_unpacked_once_and_the_wrapper_folder_is_not_repeated(server, tmp_path, fmt):
    name = "val.zip" if fmt == "zip" else "val.tgz"
    server.routes["/" + name] = Route(_archive(fmt, {"val/a.jpg": b"A", "val/sub/b.jpg": b"B"}))
    sources = [src("v", server.url("/" + name), "coco/" + name, kind="images", unpack=fmt)]
    (tmp_path / f"coco/val/.{name}.unpacking").mkdir(parents=True)  # leftover of an interrupted unpack
    rep = D.fetch_all(sources, tmp_path, progress=False)
    assert rep.results[0].status == "ok" and "unpacked" in rep.results[0].reason
    out = tmp_path / "coco/val"
    assert (out / "a.jpg").read_bytes() == b"A" and (out / "sub/b.jpg").read_bytes() == b"B"
    assert not (out / "val").exists() and not (out / f".{name}.unpacking").exists()
    assert (out / f".{name}.done").read_text().strip() == sha(server.routes["/" + name].body)

    before = os.stat(out / "a.jpg")
    rep = D.fetch_all(sources, tmp_path, progress=False)
    assert rep.results[0].status == "cached" and "already unpacked" in rep.results[0].reason
    after = os.stat(out / "a.jpg")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    (tmp_path / "coco" / name).unlink()  # archive removed to save disk: the marker still vouches
    assert D.fetch_all(sources, tmp_path, progress=False).results[0].status == "cached"
    assert len(server.log) == 1


def test_the_report_is_written_when_the_run_is_interrupted(server, tmp_path, monkeypatch):
    real = D._fetch_one

    def fetch_one(s, **kw):
        if s.name == "b":
            raise KeyboardInterrupt
        return real(s, **kw)

    monkeypatch.setattr(D, "_fetch_one", fetch_one)
    server.routes["/a"] = Route(b"a")
    sources = [src("a", server.url("/a"), "a"), src("b", server.url("/b"), "b")]
    with pytest.raises(KeyboardInterrupt):
        D.fetch_all(sources, tmp_path, workers=1, progress=False)
    js = json.loads((tmp_path / "coverage.json").read_text())
    assert {r["name"]: r["status"] for r in js["results"]} == {"a": "present", "b": "failed"}
    assert "interrupted" in js["missing"][0]["reason"]


# ------------------------------------------------------------------------------------------ images
def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_image_downloader_composites_resizes_pads_and_counts_failures(server, tmp_path):
    rgba = np.zeros((200, 400, 4), np.uint8)  # 400 wide, 200 high
    rgba[:, :200] = (255, 0, 0, 255)  # left half: opaque red
    rgba[:, 200:300] = (0, 0, 0, 0)  # transparent -> white
    rgba[:, 300:] = (0, 0, 0, 128)  # half-transparent black -> 255 - 128 = 127 grey
    server.routes["/wide.png"] = Route(_png(Image.fromarray(rgba, "RGBA")))
    server.routes["/small.png"] = Route(_png(Image.new("RGB", (100, 50), (0, 0, 255))))
    server.routes["/broken.jpg"] = Route(b"\xff\xd8 this is not an image")
    urls = [("wide", server.url("/wide.png")), ("small", server.url("/small.png")),
            ("broken", server.url("/broken.jpg")), ("gone", server.url("/gone.jpg"))]
    out = tmp_path / "images"
    rep = D.download_images(urls, out, workers=4, progress=False)
    assert (rep.total, rep.ok, rep.cached, rep.n_failed) == (4, 2, 0, 2)
    assert [i for i, _, _ in rep.failed] == ["broken", "gone"]
    assert rep.failed[0][2].startswith("unreadable image (23 bytes)") and "HTTP 404" in rep.failed[1][2]
    assert sorted(p.name for p in out.iterdir()) == ["small.jpg", "wide.jpg"]  # no blanks for failures

    wide = np.asarray(Image.open(out / "wide.jpg"))
    assert wide.shape == (256, 256, 3)  # 400x200 -> 256x128, centred on a white 256x256 square
    assert (wide[:60] >= 250).all() and (wide[-60:] >= 250).all()  # white padding above and below
    assert np.allclose(wide[128, 40], (255, 0, 0), atol=8)  # red stays red
    assert (wide[128, 150] >= 247).all()  # transparent composited on white, not black
    assert np.allclose(wide[128, 230], (127, 127, 127), atol=8)  # a/255*c + 255 - a
    small = Image.open(out / "small.jpg")
    assert small.size == (100, 50)  # like the authors' script: no upscaling, no padding below 256
    assert json.loads((tmp_path / "images.report.json").read_text())["n_failed"] == 2

    n = len(server.log)
    rep = D.download_images(urls, out, workers=4, progress=False)
    assert (rep.ok, rep.cached, rep.n_failed) == (0, 2, 2)
    assert sorted(p for p, _ in server.log[n:]) == ["/broken.jpg", "/gone.jpg"]  # only failures are retried


def test_image_ids_must_be_safe_file_names(tmp_path):
    with pytest.raises(ValueError, match="file names"):
        D.download_images([("../evil", "http://127.0.0.1/x")], tmp_path, progress=False)


# ------------------------------------------------------------------------------------------ the manifest
def test_manifest_covers_the_benchmarks_with_unique_destinations():
    src_ = S.paper_sources()
    assert len({s.dest for s in src_}) == len(src_)
    names = {s.name for s in src_}
    assert {f"xgqa-test-{l}" for l in S.XGQA_LANGS} <= names and len(S.XGQA_LANGS) == 8
    assert {f"marvl-test-{l}" for l in ("id", "sw", "ta", "tr", "zh")} <= names
    assert all(s.note for s in src_ if s.url is None)
    assert {s.name for s in src_ if s.url is None} == {"imagenet-train", "flickr30k-images", "marvl-images",
                                                       "nlvr2-images"}
    iglue = [s for s in src_ if s.dest.startswith("iglue/")]
    assert all(s.url == S.IGLUE + s.dest.removeprefix("iglue/") for s in iglue)
    assert all(s.url.startswith(S.MBLIP_TRAIN) for s in src_ if s.kind == "model-data")
    assert {s.name for s in S.select(src_, "xgqa-test-*")} == {f"xgqa-test-{l}" for l in S.XGQA_LANGS}
    assert "gqa-images" in {s.name for s in S.select(src_, ["finetune-xgqa"])}
    with pytest.raises(ValueError, match="matches no source"):
        S.select(src_, ["xqga"])
