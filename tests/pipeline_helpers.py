"""What the upscale_video tests (tests/test_pipeline_*.py) share: CPU fp32 options and a tiny x2 Upscaler.

A test module takes the fixture with ``from pipeline_helpers import up2 as up2`` (an explicit re-export:
pytest finds fixtures in the module's namespace, and ruff does not take the test's argument of the same name
for a redefinition).
"""

from __future__ import annotations

import pytest
from conftest import detail_elan

from elan_video.model.upscaler import Upscaler

FAST = {"device": "cpu", "precision": "fp32"}


@pytest.fixture(scope="module")
def up2() -> Upscaler:
    """:func:`conftest.detail_elan`: its output is a picture, so a shifted, swapped or miscoloured frame shows."""
    return Upscaler(detail_elan(2), scale=2, **FAST)
