"""`convlens serve`: every endpoint through the ASGI test client (answers equal the
library's, bad input is a 4xx with a message), parallel ablations against a real
server, and the page driven in headless Chromium with Selenium."""

from __future__ import annotations

import base64
import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from matplotlib import colormaps
from PIL import Image

from convlens import models
from convlens.cli import main
from convlens.data import fashion_mnist as fm
from convlens.data.sources import FashionSplit
from convlens.interpret import ablation
from convlens.interpret.dissect import dissect
from convlens.interpret.maps import registry
from convlens.render import heatmaps
from convlens.render.atlas import write_atlas
from convlens.render.heatmaps import MapStyle
from convlens.serve.app import create_app
from convlens.serve.explorer import Explorer
from tests.browser import CHROMIUM, needs_chromium
from tests.helpers import needs_fashion

pytestmark = needs_fashion


def png_bytes(size: tuple[int, int] = (40, 30), seed: int = 0) -> bytes:
    a = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Explorer, TestClient]]:
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "imgs").mkdir()
    for i in range(2):
        (tmp / "imgs" / f"photo{i}.png").write_bytes(png_bytes(seed=i))
    loaded = models.load("fashion-cnn")
    source = FashionSplit("test", limit=300)
    d = dissect(loaded.model, source, "features", progress=False)
    write_atlas(d, source, tmp / "atlas", "atlas", progress=False)
    concepts = ["concepts", "fashion-cnn", "--per-class", "--limit", "300", "--k", "4", "--top",
                "3", "--visualize-steps", "2", "--show", "0", "--out", str(tmp / "c")]  # fmt: skip
    assert main(concepts) == 0
    explorer = Explorer(loaded, images_dir=tmp / "imgs", data="test", dissection=tmp / "atlas",
                        concepts=tmp / "c")  # fmt: skip
    with TestClient(create_app(explorer), base_url="http://127.0.0.1:8000") as client:
        yield explorer, client
    explorer.close()


def test_page_info_and_images(served: tuple[Explorer, TestClient]) -> None:
    _, client = served
    page = client.get("/")
    assert page.status_code == 200 and "convlens explorer" in page.text
    assert client.get("/static/app.js").status_code == 200
    info = client.get("/api/info").json()
    assert info["model"] == "fashion-cnn" and info["default_layer"] == "features"
    assert info["images"] == 10_002 and info["dissection"] == {"layer": "features", "units": 128}
    assert "gradcam" in info["methods"] and "scorecam" not in info["methods"]
    last = client.get("/api/images", params={"offset": 9_998, "limit": 10}).json()
    assert [i["id"] for i in last["items"]] == ["test:9998", "test:9999", "file:0", "file:1"]
    assert last["items"][0]["label"] == fm.CLASSES[int(fm.load_fashion_mnist("test").labels[9998])]
    png = client.get("/api/images/test:3.png")
    assert png.headers["content-type"] == "image/png" and Image.open(
        io.BytesIO(png.content)
    ).size == (28, 28)


def test_answers_equal_the_library(served: tuple[Explorer, TestClient]) -> None:
    explorer, client = served
    x = explorer.image("test:7").x
    model = explorer.model
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    top = client.get("/api/predict", params={"image": "test:7"}).json()["top5"]
    assert [t["index"] for t in top] == probs.topk(5).indices.tolist()
    assert top[0]["prob"] == pytest.approx(float(probs.max()), abs=1e-6)

    heat = client.get("/api/cam.png", params={"image": "test:7", "class": 3, "method": "gradcam"})
    assert heat.status_code == 200
    assert Image.open(io.BytesIO(heat.content)).size == (28, 28)
    want = registry.class_maps(model, x, method="gradcam", classes=torch.tensor([[3]])).upsampled[
        0, 0
    ]
    got = np.asarray(Image.open(io.BytesIO(heat.content)).convert("RGB"))
    jet = (colormaps["jet"](want.numpy())[..., :3] * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(got, jet)

    # pixel attributions: a quick one directly, a long one as a job, equal to the library
    # drawn by the one renderer, in the method's own sign mode (zero transparent)
    for method, direct in (("saliency", True), ("integratedgradients", False)):
        result = registry.class_maps(model, x, method=method, classes=torch.tensor([[3]]))
        signed, style = heatmaps.drawable(result)
        rgba = heatmaps.heat_rgba_bytes(signed[0, 0], style)
        params = {"image": "test:7", "class": 3, "method": method}
        first = client.get("/api/cam.png", params=params)
        assert first.status_code == (200 if direct else 409)
        if not direct:
            assert "job" in first.json()["detail"]
            job = client.post("/api/jobs/map", json=params).json()
            deadline = time.monotonic() + 60
            while (job := client.get(f"/api/jobs/{job['id']}").json())["status"] != "done":
                assert job["status"] in ("queued", "running") and time.monotonic() < deadline
                time.sleep(0.05)
            first = client.get("/api/cam.png", params=params)  # now made
            assert base64.b64decode(job["result"]["png"]) == first.content
        got = np.asarray(Image.open(io.BytesIO(first.content)).convert("RGBA"))
        assert np.array_equal(got, rgba)
    # another sign mode and clipping of the same map: drawn from the map already made
    params = {"image": "test:7", "class": 3, "method": "integratedgradients"}
    for sign, clip in (("positive", 2.0), ("absolute", 10.0)):
        drawn = client.get("/api/cam.png", params={**params, "sign": sign, "clip": clip})
        assert drawn.status_code == 200
        want = heatmaps.heat_rgba_bytes(signed[0, 0], MapStyle(sign=sign, outlier_percentile=clip))
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(drawn.content))), want)
    bad = client.get("/api/cam.png", params={**params, "sign": "both"})
    assert bad.status_code == 400 and "sign must be one of" in bad.json()["detail"]
    bad = client.get("/api/cam.png", params={**params, "clip": 100})
    assert bad.status_code == 400 and "clip must be a percentage" in bad.json()["detail"]
    info = client.get("/api/info").json()
    assert info["signs"]["saliency"] == "absolute" and "gradcam" not in info["signs"]
    assert {"saliency", "guidedgradcam", "integratedgradients"} <= set(info["methods"])
    assert info["long_methods"] == ["integratedgradients", "smoothgrad", "occlusion"]

    units = client.get("/api/units", params={"image": "test:7", "layer": "features"}).json()
    means = units_means = [u["mean"] for u in units["units"]]
    assert len(units["units"]) == 12 and means == sorted(units_means, reverse=True)

    chosen = [u["unit"] for u in units["units"][:3]]
    r = client.post("/api/ablate", json={"image": "test:7", "units": chosen}).json()
    lib = ablation.ablate(model, x, "features", chosen)
    assert [t["index"] for t in r["after"]] == lib.probs_after[0].topk(5).indices.tolist()
    assert r["after"][0]["prob"] == pytest.approx(float(lib.probs_after[0].max()), abs=1e-6)
    w = client.post("/api/ablate", json={"image": "test:7", "units": chosen, "mode": "weights",
                                         "layer": "features.2.1.conv"})  # fmt: skip
    assert w.status_code == 200 and w.json()["mode"] == "weights"

    f = client.post("/api/fewest", json={"image": "test:7"}).json()
    lib_f = ablation.fewest_units(model, x)
    assert f["found"] and f["units"] == list(lib_f.units)
    assert f["after"][0]["index"] != f["before"][0]["index"]

    filters = client.get("/api/filters.png", params={"layer": "features.0.0.conv"})
    assert filters.status_code == 200 and filters.content[:4] == b"\x89PNG"
    card = client.get("/api/dissection/5").json()
    assert card["unit"] == 5 and card["layer"] == "features" and "selectivity" in card
    assert client.get("/api/dissection/5.png").content[:4] == b"\x89PNG"


def test_uploads(served: tuple[Explorer, TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    _, client = served
    r = client.post("/api/upload", files={"file": ("shoe.png", png_bytes(), "image/png")})
    assert r.status_code == 200
    new = r.json()["id"]
    assert new.startswith("upload:") and client.get(f"/api/images/{new}.png").status_code == 200
    assert len(client.get("/api/predict", params={"image": new}).json()["top5"]) == 5

    text = client.post("/api/upload", files={"file": ("a.txt", b"hello", "text/plain")})
    assert text.status_code == 415 and text.json()["detail"] == "upload is text/plain, not an image"
    junk = client.post("/api/upload", files={"file": ("x.png", b"not a png", "image/png")})
    assert junk.status_code == 400 and "x.png is not a readable image" in junk.json()["detail"]
    assert "/tmp" not in junk.json()["detail"]  # no server path leaks out
    big = client.post("/api/upload", files={"file": ("big.png", b"0" * (21 * 2**20), "image/png")})
    assert big.status_code == 413
    monkeypatch.setenv("CONVLENS_MAX_IMAGE_PIXELS", "100")
    bomb = client.post("/api/upload", files={"file": ("bomb.png", png_bytes(seed=9), "image/png")})
    assert bomb.status_code == 400 and "more than the limit of 100" in bomb.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "params", "status", "message"),
    [
        ("get", "/api/predict", {"image": "../../etc/passwd"}, 404, "ids are test:N, file:N"),
        ("get", "/api/predict", {"image": "test:10000"}, 404, "no image 'test:10000'"),
        ("get", "/api/predict", {"image": "upload:99"}, 404, "no image 'upload:99'"),
        ("get", "/api/predict", {"image": "upload:0123456789abcdef"}, 404, "upload the file again"),
        ("get", "/api/predict", {"image": "test:0\n"}, 404, "ids are test:N"),
        ("get", "/api/predict", {"image": "test:٣"}, 404, "ids are test:N"),
        ("get", "/api/predict", {"image": "test:" + "1" * 5000}, 404, "..."),
        ("post", "/api/ablate", {"image": "test:1", "units": [999] * 5000}, 400, "at most 4,096"),
        (
            "post",
            "/api/ablate",
            {"image": "test:1", "units": list(range(200, 4000))},
            404,
            "and 3,790 more",
        ),
        ("get", "/api/images/file:7.png", {}, 404, "no image 'file:7'"),
        ("get", "/api/cam.png", {"image": "test:1", "class": 10}, 404, "no class 10"),
        ("get", "/api/cam.png", {"image": "test:1", "class": 1, "method": "x"}, 404, "no method"),
        ("get", "/api/units", {"image": "test:1", "layer": "fc"}, 404, "no layer 'fc'"),
        ("get", "/api/units", {"image": "test:1", "top": 0}, 400, "top must be in 1..64"),
        ("post", "/api/ablate", {"image": "test:1", "units": [500]}, 404, "unit"),
        ("post", "/api/ablate", {"image": "test:1", "units": []}, 400, "at least one unit"),
        ("post", "/api/ablate", {"image": "test:1", "units": [1], "mode": "x"}, 400, "mode must"),
        ("post", "/api/fewest", {"image": "test:1", "layer": "nope"}, 404, "no layer 'nope'"),
        ("get", "/api/filters.png", {"layer": "features"}, 404, "no conv layer"),
        ("get", "/api/dissection/128", {}, 404, "no unit 128 in the dissection"),
        ("get", "/api/concepts/all/0.png", {}, 404, "no concept 0 of 'all'; groups: 0, 1"),
        ("get", "/api/concepts/3/4.png", {}, 404, "no concept 4 of '3'"),
        ("get", "/api/concepts/..%2Fx/0.png", {}, 404, "Not Found"),  # no route: no path
        ("get", "/api/concepts/x%00/0.png", {}, 404, "no concept 0 of 'x\\x00'"),
        ("get", "/api/concepts", {"image": "test:99999"}, 404, "test:"),
        ("get", "/api/images", {"limit": 1000}, 400, "limit in 1..200"),
    ],
)
def test_bad_requests_are_4xx_with_a_message(
    served: tuple[Explorer, TestClient],
    method: str,
    path: str,
    params: dict[str, Any],
    status: int,
    message: str,
) -> None:
    _, client = served
    r = client.get(path, params=params) if method == "get" else client.post(path, json=params)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


# ------------------------------------------------------------------ a real server


# the page's shown images that did not load
BROKEN_IMAGES = (
    "return Array.from(document.images).filter("
    "i => !i.hidden && !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(served: tuple[Explorer, TestClient]) -> Iterator[str]:
    explorer, _ = served
    port = free_port()
    srv, thread = run_server(create_app(explorer), port)
    yield f"http://127.0.0.1:{port}"
    stop_server(srv, thread)


def test_parallel_ablations_never_mix(served: tuple[Explorer, TestClient], server: str) -> None:
    explorer, _ = served
    x = explorer.image("test:11").x
    sets = [[3, 17, 40], [5], list(range(0, 128, 2)), [100, 101]]
    want = {
        tuple(s): ablation.ablate(explorer.model, x, "features", s).probs_after[0].topk(5)
        for s in sets
    }

    def call(units: list[int]) -> tuple[tuple[int, ...], list[int], float]:
        with httpx.Client(base_url=server, timeout=60) as c:
            r = c.post("/api/ablate", json={"image": "test:11", "units": units}).json()
        return tuple(units), [t["index"] for t in r["after"]], r["after"][0]["prob"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, [s for _ in range(10) for s in sets]))
    for units, indices, prob in results:
        assert indices == want[units].indices.tolist()
        assert prob == pytest.approx(float(want[units].values[0]), abs=1e-6)
    assert all(not m._forward_hooks for m in explorer.model.modules())


@needs_chromium
def test_the_page_in_chromium(served: tuple[Explorer, TestClient], server: str,
                              tmp_path: Path) -> None:  # fmt: skip
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = chrome(tmp_path, "--window-size=1300,1100", console=True)
    wait = WebDriverWait(driver, 60)
    api = httpx.Client(base_url=server, timeout=60)
    try:
        driver.get(server + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        image = driver.find_element(By.ID, "image-name").text
        assert image == "test:0"
        # pick another image, then its second class
        driver.find_element(By.CSS_SELECTOR, '#thumbs img[data-id="test:5"]').click()
        wait.until(lambda d: d.find_element(By.ID, "image-name").text == "test:5")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#units .unit")) == 12)
        top5 = api.get("/api/predict", params={"image": "test:5"}).json()["top5"]
        second = top5[1]["index"]
        driver.find_elements(By.CSS_SELECTOR, "#top5 li")[1].click()
        wait.until(
            lambda d: d.find_element(By.ID, "overlay").get_attribute("data-cls") == str(second)
        )
        # a long map method: computed as a job with a progress bar, then shown
        Select(driver.find_element(By.ID, "method")).select_by_value("integratedgradients")
        wait.until(lambda d: d.find_element(By.ID, "overlay").get_attribute("data-method")
                   == "integratedgradients")  # fmt: skip
        assert driver.find_element(By.ID, "overlay").get_attribute("data-cls") == str(second)
        Select(driver.find_element(By.ID, "method")).select_by_value("gradcam")
        wait.until(lambda d: d.find_element(By.ID, "overlay").get_attribute("data-method")
                   == "gradcam")  # fmt: skip
        # switch two units off: the page shows what the API answers
        tiles = driver.find_elements(By.CSS_SELECTOR, "#units .unit")
        units = [int(t.get_attribute("data-unit")) for t in tiles[:2]]
        tiles[0].click()
        wait.until(lambda d: d.find_element(By.ID, "ablated").text == "1 unit")
        tiles[1].click()
        wait.until(lambda d: d.find_element(By.ID, "ablated").text == "2 units")
        want = api.post("/api/ablate", json={"image": "test:5", "units": units}).json()
        shown = [
            li.get_attribute("data-index")
            for li in driver.find_elements(By.CSS_SELECTOR, "#after li")
        ]
        assert shown == [str(t["index"]) for t in want["after"]]
        # the last clicked unit's card: its optimised image (a job) and its top images
        assert driver.find_element(By.ID, "unit-card").is_displayed()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#unit-vis img"))
        assert driver.find_element(By.CSS_SELECTOR, "#unit-exemplars img").is_displayed()
        vis = api.post("/api/jobs/visualize", json={"layer": "features", "unit": units[1]})
        assert vis.json()["status"] == "done"  # the page's job, kept for its result
        # the top class's concepts where they are, a click shows the card
        concepts = api.get("/api/concepts", params={"image": "test:5"}).json()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#concepts .concept")) == 4)
        found = driver.find_elements(By.CSS_SELECTOR, "#concepts .concept")
        order = [int(t.get_attribute("data-concept")) for t in found]
        assert order == [c["concept"] for c in concepts["concepts"]]
        found[0].click()
        wait.until(lambda d: d.find_element(By.ID, "concept-card").is_displayed())
        # the fewest units that flip the top-1
        driver.find_element(By.ID, "fewest").click()
        wait.until(lambda d: d.find_element(By.ID, "fewest-result").text.startswith("Removing"))
        fewest = api.post("/api/fewest", json={"image": "test:5"}).json()
        after = [
            li.get_attribute("data-index")
            for li in driver.find_elements(By.CSS_SELECTOR, "#after li")
        ]
        assert after == [str(t["index"]) for t in fewest["after"]] and after[0] != str(
            top5[0]["index"]
        )
        off = sorted(
            int(t.get_attribute("data-unit"))
            for t in driver.find_elements(By.CSS_SELECTOR, "#units .unit.off")
        )
        assert off == sorted(
            u for u in fewest["units"] if u in {int(t.get_attribute("data-unit")) for t in tiles}
        )
        # every image loaded, and the console is clean
        wait.until(lambda d: d.execute_script(BROKEN_IMAGES) == [])
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == []
        assert driver.find_element(By.ID, "error").text == ""
        assert not driver.find_element(By.ID, "busy").is_displayed()
        driver.save_screenshot(str(tmp_path / "explorer.png"))
        assert (tmp_path / "explorer.png").read_bytes()[:4] == b"\x89PNG"
        shot = os.environ.get("CONVLENS_SCREENSHOT")
        if shot:  # how docs/serve.png is made
            driver.save_screenshot(shot)
        # a bad upload: one clear line on the page
        notes = tmp_path / "notes.txt"
        notes.write_text("not an image")
        driver.find_element(By.ID, "upload").send_keys(str(notes))
        wait.until(lambda d: d.find_element(By.ID, "error").text)
        assert driver.find_element(By.ID, "error").text == "upload is text/plain, not an image"
    finally:
        api.close()
        driver.quit()


def test_serve_command_prints_the_url_and_warns_off_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    from convlens.cli import main

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    assert main(["serve", "fashion-cnn", "--port", "8123"]) == 0
    out = capsys.readouterr()
    assert "http://127.0.0.1:8123/" in out.out and "warning" not in out.err
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert main(["serve", "fashion-cnn", "--host", "0.0.0.0"]) == 0
    assert "warning: binding to 0.0.0.0" in capsys.readouterr().err
    assert main(["serve", "fashion-cnn", "--images", "/nonexistent"]) == 2
    assert "--images /nonexistent is not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------ a hostile user


def upload(client: TestClient, data: bytes, name: str = "x.png") -> Any:
    return client.post("/api/upload", files={"file": (name, data, "image/png")})


def test_uploads_are_kept_by_content_bounded_and_listed(
    served: tuple[Explorer, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    from convlens.serve import catalog as ex

    explorer, client = served
    first = upload(client, png_bytes(seed=5), "five.png").json()["id"]
    assert upload(client, png_bytes(seed=5), "again.png").json()["id"] == first  # same bytes
    assert upload(client, png_bytes(seed=6)).json()["id"] != first
    listed = client.get("/api/images").json()["uploads"]
    assert listed[0]["id"] != first and first in [u["id"] for u in listed]
    # a bounded store: the least recently used upload goes, with a clear 404
    monkeypatch.setattr(explorer.uploads, "max_count", 3)
    ids = [upload(client, png_bytes(seed=100 + i)).json()["id"] for i in range(3)]
    assert len(client.get("/api/images").json()["uploads"]) == 3
    gone = client.get("/api/predict", params={"image": first})
    assert gone.status_code == 404 and "has expired" in gone.json()["detail"]
    assert client.get("/api/predict", params={"image": ids[0]}).status_code == 200
    assert explorer.uploads.bytes == sum(size for _, size in explorer.uploads.items.values())
    assert ex.MAX_UPLOADS >= 64


def header_only_png(width: int, height: int, bit_depth: int = 8, colour: int = 2) -> bytes:
    """A PNG whose header says ``width x height`` with (almost) no pixel data: the header
    is all the explorer may read before it refuses."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("width", "height", "depth", "colour", "message"),
    [
        (8000, 8000, 16, 0, "once decoded, over the limit"),  # 16-bit grey: 1.4 GB at peak
        (6000, 6000, 8, 6, "once decoded, over the limit"),  # RGBA
        (20000, 5, 8, 2, "more elongated than 10:1"),  # resizes to a gigabyte
    ],
)
def test_uploads_that_would_take_too_much_memory_are_refused_from_the_header(
    served: tuple[Explorer, TestClient], width: int, height: int, depth: int, colour: int,
    message: str,
) -> None:  # fmt: skip
    _, client = served
    r = upload(client, header_only_png(width, height, depth, colour))
    assert r.status_code == 400 and message in r.json()["detail"], r.text


def test_a_foreign_host_or_a_cross_origin_change_is_refused(
    served: tuple[Explorer, TestClient],
) -> None:
    explorer, client = served
    evil = client.get("/api/info", headers={"Host": "evil.example"})
    assert evil.status_code == 421 and "--allow-host evil.example" in evil.json()["detail"]
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert client.get("/api/info", headers={"Host": host}).status_code == 200
    body = {"image": "test:1", "units": [1]}
    cross = client.post("/api/ablate", json=body, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403 and "cross-origin" in cross.json()["detail"]
    site = client.post("/api/ablate", json=body, headers={"Sec-Fetch-Site": "cross-site"})
    assert site.status_code == 403
    own = client.post("/api/ablate", json=body, headers={"Origin": "http://127.0.0.1:8000"})
    assert own.status_code == 200
    assert "access-control-allow-origin" not in {k.lower() for k in own.headers}
    with TestClient(create_app(explorer, allow_hosts=["lab.example"])) as other:
        r = other.get("/api/info", headers={"Host": "lab.example:8000"})
        assert r.status_code == 200


def test_images_are_cached_by_content(served: tuple[Explorer, TestClient]) -> None:
    _, client = served
    r = client.get("/api/images/test:3.png")
    assert r.headers["cache-control"] == "no-cache" and r.headers["etag"]
    again = client.get("/api/images/test:3.png", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and not again.content
    other = client.get("/api/images/test:4.png")
    assert other.headers["etag"] != r.headers["etag"]


def test_a_long_search_does_not_hold_up_short_answers(
    served: tuple[Explorer, TestClient],
) -> None:
    """Long work runs as a job on its own copy of the model: while a job runs, short
    answers come; the page follows its progress and gets the same answer as the
    blocking endpoint; a job can be cancelled."""
    explorer, client = served
    gate = threading.Event()

    def slow(on_step: Any) -> str:
        for k in range(1000):
            on_step(k, 1000)
            if gate.wait(0.01):
                return "done"
        return "timeout"

    job = explorer.jobs.submit("test", ("slow", time.time()), slow)
    deadline = time.monotonic() + 10
    while job.status != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.status == "running"
    r = client.post("/api/ablate", json={"image": "test:2", "units": [3]})
    assert r.status_code == 200  # answered while the job runs
    progress = client.get(f"/api/jobs/{job.id}").json()
    assert progress["status"] == "running" and progress["total"] == 1000
    assert client.delete(f"/api/jobs/{job.id}").status_code == 200
    assert job.ended.wait(10) and job.status == "cancelled"
    gate.set()
    # the search as a job: polled to the end, equal to the blocking answer
    start = client.post("/api/jobs/fewest", json={"image": "test:4"}).json()
    assert start["status"] in ("queued", "running", "done")
    deadline = time.monotonic() + 60
    while (answer := client.get(f"/api/jobs/{start['id']}").json())["status"] != "done":
        assert answer["status"] in ("queued", "running") and time.monotonic() < deadline
        time.sleep(0.05)
    assert answer["result"] == client.post("/api/fewest", json={"image": "test:4"}).json()
    assert client.get("/api/jobs/0123456789abcdef").status_code == 404
    assert client.get("/api/jobs/..%2F..%2Fetc").status_code == 404


def test_a_job_whose_page_stops_asking_is_cancelled() -> None:
    from convlens.serve.jobs import Jobs

    jobs = Jobs(abandon_after=0.3)
    steps = []

    def endless(on_step: Any) -> None:
        while True:
            on_step(len(steps), 0)
            steps.append(1)
            time.sleep(0.01)

    job = jobs.submit("test", ("endless",), endless)
    assert job.ended.wait(10) and job.status == "cancelled" and steps
    again = jobs.submit("test", ("endless",), lambda on_step: 42)  # a cancelled job restarts
    assert jobs.wait(again).status == "done" and again.result == 42
    failing = jobs.submit("test", ("fails",), lambda on_step: 1 / 0)
    assert jobs.wait(failing).status == "failed" and failing.answer()["error"] == "division by zero"
    jobs.close()


def test_the_cheapest_waiting_request_goes_first() -> None:
    """Deadlines by kind: arriving together, the cheapest kind goes first; a dear
    request that has waited past a cheap one's deadline goes before it."""
    from convlens.serve.scheduler import DeadlineLock

    lock, order = DeadlineLock(), []
    lock.usual = [0.01, 0.02, 0.2]  # seconds: slack 4 gives deadlines 40, 80, 800 ms on

    def request(cost: int) -> None:
        with lock(cost):
            order.append(cost)

    with lock(0):  # one computation running; three requests arrive, dearest first
        threads = []
        for cost in (2, 1, 0):
            threads.append(threading.Thread(target=request, args=(cost,)))
            threads[-1].start()
            time.sleep(0.01)
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2]
    order.clear()
    lock.usual = [0.01, 0.02, 0.2]
    with lock(0):
        dear = threading.Thread(target=request, args=(2,))
        dear.start()
        time.sleep(1.0)  # past its deadline of 800 ms
        cheap = threading.Thread(target=request, args=(0,))
        cheap.start()
        time.sleep(0.1)
    dear.join(10)
    cheap.join(10)
    assert order == [2, 0]


def run_server(app: Any, port: int) -> tuple[Any, threading.Thread]:
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    return srv, thread


def stop_server(srv: Any, thread: threading.Thread) -> None:
    srv.should_exit = True
    thread.join(10)


def chrome(tmp_path: Path, *flags: str, console: bool = False) -> Any:
    """Headless Chromium driven by Debian's chromedriver; ``console`` keeps the page's
    console log for ``driver.get_log("browser")``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        f"--user-data-dir={tmp_path / 'chrome'}",
        *flags,
    ):
        options.add_argument(flag)  # fmt: skip
    assert CHROMIUM is not None
    options.binary_location = CHROMIUM
    if console:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
    return webdriver.Chrome(service=Service(driver_path), options=options)


def solid_png(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), rgb).save(buf, format="PNG")
    return buf.getvalue()


# the colour at the centre of the page's #image, drawn into a canvas
CENTRE_PIXEL = """
const img = document.getElementById("image");
if (!img.complete || !img.naturalWidth) return null;
const c = document.createElement("canvas");
c.width = img.naturalWidth; c.height = img.naturalHeight;
const g = c.getContext("2d");
g.drawImage(img, 0, 0);
return Array.from(g.getImageData(c.width >> 1, c.height >> 1, 1, 1).data.slice(0, 3));
"""


@needs_chromium
def test_after_a_restart_the_page_shows_the_new_image_in_the_same_slot(tmp_path: Path) -> None:
    """file:0 is red on the first server and blue on the second (same port, same URL):
    the browser, which cached the first answer, must show blue."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    loaded = models.load("torchvision:resnet18", weights="none")
    port = free_port()
    driver = chrome(tmp_path)
    seen = []
    try:
        for rgb in ((220, 20, 20), (20, 20, 220)):
            folder = tmp_path / f"imgs{rgb[0]}"
            folder.mkdir()
            (folder / "photo.png").write_bytes(solid_png(rgb))
            explorer = Explorer(loaded, images_dir=folder)
            srv, thread = run_server(create_app(explorer), port)
            try:
                driver.get(f"http://127.0.0.1:{port}/")
                wait = WebDriverWait(driver, 60)
                wait.until(
                    lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
                )
                wait.until(lambda d: d.execute_script(CENTRE_PIXEL) is not None)
                seen.append(driver.execute_script(CENTRE_PIXEL))
            finally:
                stop_server(srv, thread)
                explorer.close()
    finally:
        driver.quit()
    red, blue = seen
    assert red[0] > 150 and red[2] < 80, red
    assert blue[2] > 150 and blue[0] < 80, blue


@needs_chromium
def test_a_page_on_another_origin_cannot_upload(
    served: tuple[Explorer, TestClient], server: str, tmp_path: Path
) -> None:
    """A page served from another origin posts an upload to the explorer (a simple
    request: the browser sends it without asking first); the explorer refuses it."""
    import http.server
    import socketserver
    from functools import partial

    from selenium.webdriver.support.ui import WebDriverWait

    explorer, _ = served
    before = len(explorer.uploads.items)
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(
        "<!DOCTYPE html><html><body><script>\n"
        "const c = document.createElement('canvas'); c.width = c.height = 32;\n"
        "c.getContext('2d').fillRect(0, 0, 16, 16);\n"
        "c.toBlob(async (blob) => {\n"
        "  const results = [];\n"
        "  for (let i = 0; i < 5; i++) {\n"
        "    const form = new FormData(); form.append('file', blob, 'x' + i + '.png');\n"
        f"    try {{ await fetch('{server}/api/upload',"
        " {method: 'POST', body: form, mode: 'no-cors'}); results.push('sent'); }\n"
        "    catch (e) { results.push('blocked'); }\n"
        "  }\n"
        "  document.body.dataset.done = results.join(',');\n"
        "});\n"
        "</script></body></html>"
    )
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    with socketserver.TCPServer(("127.0.0.1", 0), handler) as other:
        port = other.server_address[1]
        thread = threading.Thread(target=other.serve_forever, daemon=True)
        thread.start()
        driver = chrome(tmp_path)
        try:
            driver.get(f"http://localhost:{port}/index.html")
            WebDriverWait(driver, 60).until(
                lambda d: d.execute_script("return document.body.dataset.done")
            )
        finally:
            driver.quit()
            other.shutdown()
    assert len(explorer.uploads.items) == before


@needs_chromium
def test_the_page_defects_a_newcomer_met_are_gone(
    served: tuple[Explorer, TestClient], server: str, tmp_path: Path
) -> None:
    """Each defect of the first explorer page, as a newcomer met it, checked in Chromium
    at a laptop's window size; and long work is cancelled when the page moves on."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    explorer, _ = served
    driver = chrome(tmp_path, "--window-size=1280,800")
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(server + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        # the filters menu offers conv layers only, and its picture loads
        offered = [o.get_attribute("value") for o in Select(
            driver.find_element(By.ID, "filter-layer")).options]  # fmt: skip
        assert "features" not in offered and offered[0] == "features.0.0.conv"
        wait.until(lambda d: d.execute_script(BROKEN_IMAGES) == [])
        # the upload control is in view without scrolling, and says the limits
        rect = "return document.getElementById(arguments[0]).getBoundingClientRect()"
        assert driver.execute_script(rect, "upload")["bottom"] < 800
        assert "MB" in driver.find_element(By.ID, "limits").text
        # the numbers on the unit tiles are explained
        assert "mean activation" in driver.find_element(By.CSS_SELECTOR, ".hint").text
        # an upload over the limit: the server's one line, beside the control, not a
        # JSON parse error
        big = tmp_path / "big.png"
        big.write_bytes(b"\x89PNG" + os.urandom(21 * 2**20))
        driver.find_element(By.ID, "upload").send_keys(str(big))
        wait.until(lambda d: d.find_element(By.ID, "upload-error").text)
        said = driver.find_element(By.ID, "upload-error").text
        assert "JSON" not in said and ("limit" in said or "too large" in said), said
        gap = driver.execute_script(rect, "upload-error")["top"] - driver.execute_script(
            rect, "upload")["bottom"]  # fmt: skip
        assert 0 <= gap < 80
        # a clicked unit's card goes when the layer changes
        driver.find_elements(By.CSS_SELECTOR, "#units .unit")[0].click()
        wait.until(lambda d: d.find_element(By.ID, "unit-card").is_displayed())
        Select(driver.find_element(By.ID, "layer")).select_by_value("features.2.1.conv")
        wait.until(lambda d: not d.find_element(By.ID, "unit-card").is_displayed())
        # a search waiting behind other long work is cancelled when another image is chosen
        gate = threading.Event()
        blocker = explorer.jobs.submit("test", ("blocker", time.time()), lambda s: gate.wait(60))
        try:
            driver.find_element(By.ID, "fewest").click()
            wait.until(lambda d: "waiting" in d.find_element(By.ID, "fewest-result").text)
            queued = [j for j in explorer.jobs.jobs.values() if j.kind == "fewest"
                      and j.status == "queued"]  # fmt: skip
            assert len(queued) == 1
            driver.find_element(By.CSS_SELECTOR, '#thumbs img[data-id="test:7"]').click()
            wait.until(lambda d: queued[0].cancel.is_set())
        finally:
            gate.set()
        assert explorer.jobs.wait(blocker).status == "done"
        assert explorer.jobs.wait(queued[0]).status == "cancelled"
    finally:
        driver.quit()


def test_the_concepts_of_the_top_class_are_the_librarys(
    served: tuple[Explorer, TestClient],
) -> None:
    """``/api/concepts``: the top class's factorisation, its concepts by importance, each
    map equal to ``concept_maps``; each card is the strip ``convlens concepts`` wrote."""
    from convlens.interpret.concepts.discover import concept_maps

    explorer, client = served
    r = client.get("/api/concepts", params={"image": "test:3"}).json()
    c = int(explorer._logits("test:3").argmax())
    assert explorer.concepts is not None
    group = next(g for g in explorer.concepts.groups if g.group == c)
    assert [row["concept"] for row in r["concepts"]] == group.ranking(c)
    assert r["class"] == r["group"] == fm.CLASSES[c]
    maps = concept_maps(explorer.model, explorer.image("test:3").x, "features", group.bank)
    first = r["concepts"][0]
    want = heatmaps.heat_png(heatmaps.by_peak(
        torch.nn.functional.interpolate(maps, size=(28, 28), mode="bilinear")[0, first["concept"]]
    ))  # fmt: skip
    assert base64.b64decode(first["png"]) == want
    card = client.get(first["card"])
    assert card.status_code == 200 and card.content[:4] == b"\x89PNG"
    assert client.get("/api/info").json()["concepts"] == {"layer": "features", "groups": 10}
