"""Kedro pipelines. Every model pipeline is built by `model_pipeline.create_model_pipeline`."""
