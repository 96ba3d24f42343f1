"""Deployment: the MLflow pyfunc over the inference path (:mod:`.pyfunc`), its registration (:mod:`.register`)
and Spark batch scoring helpers (:mod:`.spark`)."""
