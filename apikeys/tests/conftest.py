from api.tests.conftest import frozen_today

__all__ = ["frozen_today"]
