"""The settings pytest loads: the real settings, with a throwaway SECRET_KEY when none is set.

Tests run with DEBUG off like production, where a missing key is refused. pytest-django imports
settings before any conftest runs, so the default has to be set here.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")

from core.settings import *  # noqa: F403
