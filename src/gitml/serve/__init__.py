"""The model server: FastAPI + ONNX Runtime + NumPy, installable alone (`pip install '.[serve]'`).

Nothing on this path imports torch, Lightning, pandas or Deepchecks; a test holds that by
serving from an environment where they cannot be imported.
"""
