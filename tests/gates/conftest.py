"""The small Adult sample repository of the model tests, for the gate's stages."""

from tests.model.conftest import adult_sample, fresh_copy  # noqa: F401
