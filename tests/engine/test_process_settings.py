"""settle_for_serving: the start-up objects leave the collector's passes."""

from __future__ import annotations

import gc

from toolkit.engine.process_settings import settle_for_serving


def test_settle_for_serving_freezes_what_is_alive():
    alive = [object() for _ in range(10)]
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        settle_for_serving()
        assert gc.get_freeze_count() >= len(alive)
    finally:
        gc.unfreeze()
