"""`kedro viz run` checked in a real headless Chromium: every pipeline is there, namespaces collapse, previews work.

Needs Debian's chromium (`apt-get install -y chromium`). Skipped where it is absent, except in CI
(env CI set), where a missing browser is a failure.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image


def get_json(tools, url: str, process) -> dict:
    return json.loads(tools.wait_for(url, 60, process))


@pytest.mark.timeout(600)
def test_kedro_viz_renders_the_pipelines_in_headless_chromium(chromium, browser_tools, kedro_project, run_kedro, tmp_path):
    viz = browser_tools
    from wood_anomaly.hooks import models_in
    from wood_anomaly.pipeline_registry import register_pipelines

    registered = register_pipelines()
    models = models_in(registered["__default__"].nodes)
    run_kedro(kedro_project, "reporting", {})  # something on disk to preview (the report of "no model yet")

    port = viz.free_port()
    with viz.kedro_viz(kedro_project, port, tmp_path / "viz.log") as process:
        base = f"http://127.0.0.1:{port}"
        main = get_json(viz, f"{base}/api/main", process)
        namespaces = {n["name"] for n in main["nodes"] if n.get("type") == "modularPipeline"}
        assert {*models, "reporting"} <= namespaces  # each model's namespace is a collapsible modular pipeline
        assert {p["id"] for p in main["pipelines"]} >= set(registered)  # every pipeline can be picked

        inference = get_json(viz, f"{base}/api/pipelines/inference", process)
        assert "inference" in {n["name"] for n in inference["nodes"] if n.get("type") == "modularPipeline"}

        # previews: the comparison table (CSV) and the model-results dataset answer with their content
        by_name = {n["name"]: n["id"] for n in main["nodes"]}
        table = get_json(viz, f"{base}/api/nodes/{by_name['reporting.comparison_table']}", process)
        assert "image_auroc" in json.dumps(table.get("preview"))
        results = get_json(viz, f"{base}/api/nodes/{by_name['reporting.model_results']}", process)
        assert "never run" in json.dumps(results.get("preview"))

        screenshot = tmp_path / "viz.png"
        dom = viz.render(chromium, f"{base}/", screenshot)

    drawn = viz.graph_nodes(dom)
    assert drawn.get("modularPipeline", 0) >= len(models) + 1, drawn  # collapsed namespaces drawn in the graph
    assert drawn.get("task", 0) >= 1 and drawn.get("data", 0) >= 1, drawn
    assert not viz.missing_names(dom, [*models, "reporting", "prepare_dataset"])
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape[:2] == (1000, 1600) and pixels.std() > 10  # a real picture, not a blank page
