"""The registered pyfunc and the real REST server (`mlflow models serve`, as `make serve` runs it).

Served scores must equal `kedro run --pipeline=inference` for the same files; every kind of bad
request is refused with HTTP 400 naming the row and the problem, and the server keeps serving.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT

NAME = "wood-anomaly-patchcore"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def post(url: str, body: dict | bytes, timeout: float = 120) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/invocations", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def split(*rows: list, columns: tuple[str, ...] = ("image",)) -> dict:
    return {"dataframe_split": {"columns": list(columns), "data": [list(r) for r in rows]}}


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height pixels, with almost no pixel data (never decoded)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    png = bytearray(buffer.getvalue())
    ihdr = png[12:29]  # b"IHDR" + 13 bytes of header fields
    ihdr[4:12] = struct.pack(">II", width, height)
    png[12:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(png)


# ------------------------------------------------------------------ registry
def test_training_run_registers_a_pyfunc_with_threshold_metrics_signature_and_example(deployed):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=deployed.tracking_uri, registry_uri=deployed.tracking_uri)
    (version,) = client.search_model_versions(f"name = '{NAME}'")
    folder = deployed.project / "data/08_reporting/patchcore/metrics.json"
    (kedro_version,) = [p.name for p in folder.iterdir()]
    metrics = json.loads((folder / kedro_version / "metrics.json").read_text())
    tags = version.tags
    assert float(tags["threshold"]) == pytest.approx(metrics["threshold"], rel=1e-8)
    assert tags["kedro_version"] == kedro_version and tags["backbone"] == metrics["backbone"]
    assert float(tags["test_image_auroc"]) == pytest.approx(metrics["image_auroc"], abs=1e-6)
    assert "threshold" in version.description and kedro_version in version.description
    run = client.get_run(version.run_id)  # registered from the training run itself
    assert run.data.tags["model"] == "patchcore" and run.data.metrics["threshold"] == pytest.approx(metrics["threshold"])

    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{version.version}")
    inputs = model.metadata.get_input_schema().input_names()
    assert inputs == ["image", "return_map"]
    assert model.metadata.saved_input_example_info is not None
    # a second training run adds version 2 (checked cheaply: the dataset is what the node saves to)


def test_pyfunc_predict_in_process_matches_the_inference_pipeline(deployed):
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(f"models:/{NAME}/latest")
    files = sorted(deployed.boards.iterdir())
    frame = pd.DataFrame({"image": [b64(f.read_bytes()) for f in files]})
    out = model.predict(frame)
    reference = deployed.reference.set_index("file").loc[[f.name for f in files]]
    np.testing.assert_allclose(out["score"], reference["score"], rtol=1e-4)
    assert out["verdict"].tolist() == reference["verdict"].tolist()
    assert (out["threshold"] == reference["threshold"].iloc[0]).all()


# ------------------------------------------------------------------ REST server
def test_served_predictions_equal_the_inference_pipeline_in_request_order(deployed, server):
    files = sorted(deployed.boards.iterdir())[::-1]  # an order that is not the pipeline's
    status, body = post(server.url, split(*[[b64(f.read_bytes())] for f in files]))
    assert status == 200, body
    predictions = body["predictions"]
    assert len(predictions) == len(files)
    reference = deployed.reference.set_index("file")
    for file, prediction in zip(files, predictions):
        expected = reference.loc[file.name]
        assert prediction["score"] == pytest.approx(float(expected["score"]), rel=1e-4), file.name
        assert prediction["verdict"] == expected["verdict"] and prediction["verdict"] in ("good", "defect")
        assert prediction["threshold"] == pytest.approx(float(expected["threshold"]), rel=1e-9)


def test_return_map_adds_a_png_heatmap_overlay_at_the_trained_size(deployed, server):
    image = b64(sorted(deployed.boards.iterdir())[0].read_bytes())
    status, body = post(server.url, split([image, True], [image, False], columns=("image", "return_map")))
    assert status == 200, body
    with_map, without = body["predictions"]
    overlay = Image.open(io.BytesIO(base64.b64decode(with_map["heatmap"])))
    assert overlay.format == "PNG" and overlay.size == (64, 64) and overlay.mode == "RGB"
    assert without.get("heatmap") is None
    assert with_map["score"] == without["score"]


def test_a_jpeg_of_another_size_is_resized_like_the_inference_pipeline(deployed, server, tmp_path):
    from wood_anomaly.data.layout import load_image
    from wood_anomaly.models.patchcore.model import PatchCore  # noqa: F401 - import check only

    source = sorted(deployed.boards.iterdir())[0]
    big = tmp_path / "board.jpg"
    Image.open(source).convert("RGB").resize((96, 80)).save(big, quality=95)
    status, body = post(server.url, split([b64(big.read_bytes())]))
    assert status == 200, body
    assert load_image(big).shape == (80, 96, 3)
    assert np.isfinite(body["predictions"][0]["score"])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(split(["QUJD"], ["not base64 at all!"]), ["row 1", "not valid base64"], id="not-base64"),
        pytest.param(split([b64(b"just some text, not an image")]), ["row 0", "not a recognised image"], id="not-an-image"),
        pytest.param(split([""]), ["row 0", "empty (0 bytes)"], id="zero-bytes"),
        pytest.param(split([b64(bomb_png(10_000, 8_000))]), ["row 0", "10000x8000", "megapixels"], id="decompression-bomb"),
        pytest.param(split(["QUJD"], columns=("picture",)), ["image"], id="missing-image-column"),
        pytest.param(split(), ["empty batch"], id="empty-batch"),
    ],
)
def test_bad_requests_get_400_naming_the_row_and_problem_and_the_server_keeps_serving(deployed, server, body, expected):
    status, reply = post(server.url, body)
    assert status == 400, reply
    assert reply["error_code"] == "INVALID_PARAMETER_VALUE"
    for text in expected:
        assert text in reply["message"], reply["message"]
    good = b64(sorted(deployed.boards.iterdir())[0].read_bytes())
    status, reply = post(server.url, split([good]))
    assert status == 200 and reply["predictions"][0]["verdict"] in ("good", "defect")


def test_a_truncated_image_names_its_row(deployed, server):
    data = sorted(deployed.boards.iterdir())[0].read_bytes()
    status, reply = post(server.url, split([b64(data)], [b64(data[: len(data) // 2])]))
    assert status == 400 and "row 1" in reply["message"] and "row 0" not in reply["message"].split("refused:")[1]


def test_readme_documents_make_serve_and_the_request_format():
    readme = (REPO_ROOT / "README.md").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "make serve MODEL=patchcore" in readme and "dataframe_split" in readme and "return_map" in readme
    assert "serve:" in makefile and "models:/wood-anomaly-$(MODEL)/latest" in makefile and "--env-manager local" in makefile


def test_the_default_run_registers_all_six_models_from_their_child_runs(default_run):
    """`kedro run` (the session's tiny default run, tests/conftest.py) registers one version of each model."""
    from mlflow.tracking import MlflowClient

    from wood_anomaly.models.registry import MODEL_NAMES

    uri = f"sqlite:///{default_run.project / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for model in MODEL_NAMES:
        (version,) = client.search_model_versions(f"name = 'wood-anomaly-{model}'")
        run = client.get_run(version.run_id)
        assert run.data.tags["model"] == model and "mlflow.parentRunId" in run.data.tags, model
        assert float(version.tags["threshold"]) == pytest.approx(run.data.metrics["threshold"], rel=1e-6), model
